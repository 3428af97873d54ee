//! Text from tokens where the tokenizer cannot restore it.
//!
//! Char-level and BPE tokenizers decode their text exactly (spaces are tokens or `▁` marks); the
//! word level splits on `\w+|[^\w\s]+` and forgets where the spaces were. [`detokenize`] joins its
//! tokens by rule, as Moses' detokeniser does: closing punctuation leans left, opening
//! punctuation right, apostrophes join contractions and elisions, hyphens join compounds.
//! [`capitalise_sentences`] restores what case a lowercased vocabulary can know: sentence starts.
//! Both are prefix-stable (a longer token list only appends text), which streamed generation
//! relies on: it sends the difference between successive decodings.

/// Punctuation written against the word before it.
const CLOSING: &[char] = &[
    '.', ',', ';', ':', '!', '?', ')', ']', '}', '%', '…', '”', '’', '»', '›',
];
/// Punctuation written against the word after it.
const OPENING: &[char] = &[
    '(', '[', '{', '¿', '¡', '“', '‘', '«', '‹', '„', '$', '#', '@',
];
/// Joins the words on either side.
const JOINING: &[&str] = &["-", "/", "—", "_", "~", "·"];
/// English contractions after an apostrophe (I'm, don't, she'll).
const CONTRACTIONS: &[&str] = &["s", "t", "m", "d", "ll", "re", "ve"];
/// French and Italian elisions before an apostrophe (l'homme, qu'il, dell'arte).
const ELISIONS: &[&str] = &[
    "l", "d", "j", "n", "s", "c", "m", "t", "qu", "jusqu", "lorsqu", "puisqu", "dell", "all",
    "nell", "sull", "un", "quell",
];

fn is_word(t: &str) -> bool {
    t.chars().next().is_some_and(char::is_alphanumeric)
}

fn is_number(t: &str) -> bool {
    !t.is_empty() && t.chars().all(|c| c.is_ascii_digit())
}

fn is_apostrophe(t: &str) -> bool {
    t == "'" || t == "’"
}

/// How one token meets its neighbours: (no space before it, no space after it).
fn glue(prev: Option<&str>, t: &str, next: Option<&str>, quote_open: bool) -> (bool, bool) {
    let word = |o: Option<&str>| o.is_some_and(is_word);
    let lower = |o: Option<&str>| o.map(str::to_lowercase).unwrap_or_default();
    if is_apostrophe(t) && word(prev) {
        let contraction = CONTRACTIONS.contains(&lower(next).as_str());
        let elision = word(next) && ELISIONS.contains(&lower(prev).as_str());
        return (true, contraction || elision);
    }
    if t == "\"" {
        // Straight double quotes alternate: the first opens, the next closes.
        return if quote_open {
            (true, false)
        } else {
            (false, true)
        };
    }
    if (t == "." || t == ",") && prev.is_some_and(is_number) && next.is_some_and(is_number) {
        return (true, true); // 3.5, 1,000
    }
    if JOINING.contains(&t) && word(prev) {
        // Leans left whatever follows, so that a longer list only appends text.
        return (true, word(next));
    }
    let first = t.chars().next().unwrap_or(' ');
    let last = t.chars().last().unwrap_or(' ');
    (CLOSING.contains(&first), OPENING.contains(&last))
}

/// Word-level tokens joined into text: single spaces, none where punctuation leans.
pub fn detokenize<S: AsRef<str>>(tokens: &[S]) -> String {
    let mut out = String::new();
    let mut no_space_next = true;
    let mut quote_open = false;
    for (i, t) in tokens.iter().enumerate() {
        let t = t.as_ref();
        let prev = i.checked_sub(1).map(|j| tokens[j].as_ref());
        let next = tokens.get(i + 1).map(AsRef::as_ref);
        let (before, after) = glue(prev, t, next, quote_open);
        if t == "\"" {
            quote_open = !quote_open;
        }
        if !(no_space_next || before) {
            out.push(' ');
        }
        out.push_str(t);
        no_space_next = after;
    }
    out
}

/// The first letter of the text and of every sentence (after `.`, `!` or `?` and a space,
/// opening quotes and brackets skipped) in upper case; the rest as it is.
pub fn capitalise_sentences(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut start = true;
    let mut after_end = false;
    for c in text.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
            start = false;
            after_end = false;
            continue;
        }
        out.push(c);
        if c.is_alphanumeric() {
            start = false;
            after_end = false;
        } else if matches!(c, '.' | '!' | '?') {
            after_end = true;
        } else if c.is_whitespace() && after_end {
            start = true;
        } else if !(OPENING.contains(&c) || CLOSING.contains(&c) || c == '"' || c == '\'') {
            after_end = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detok(s: &str) -> String {
        detokenize(&s.split(' ').collect::<Vec<_>>())
    }

    #[test]
    fn punctuation_leans_the_way_it_is_written() {
        assert_eq!(
            detok("alice was a little , and she went on , “ i ’ m a bit tired . ”"),
            "alice was a little, and she went on, “i’m a bit tired.”"
        );
        assert_eq!(
            detok("ein mann ( mit hut ) läuft über saftig - grünes gras ."),
            "ein mann (mit hut) läuft über saftig-grünes gras."
        );
        assert_eq!(
            detok("he said \" no \" and left !"),
            "he said \"no\" and left!"
        );
        assert_eq!(detok("it costs 3 . 5 % more"), "it costs 3.5% more");
        assert_eq!(detok("l ' homme qu ' il voit"), "l'homme qu'il voit");
        assert_eq!(detok("don ' t"), "don't");
        // A closing single quote before a word is not a contraction.
        assert_eq!(
            detok("‘ come here ’ said the queen"),
            "‘come here’ said the queen"
        );
        assert_eq!(detok(". , !"), ".,!");
        assert_eq!(detokenize::<&str>(&[]), "");
    }

    #[test]
    fn detokenising_is_prefix_stable() {
        let toks: Vec<&str> = "“ i ’ m here , ” said alice - yes . ( yes ) \" ok \" 3 . 5"
            .split(' ')
            .collect();
        for n in 1..toks.len() {
            let (a, b) = (detokenize(&toks[..n]), detokenize(&toks[..n + 1]));
            // Tokens whose glue depends on the next token (apostrophes, hyphens, decimal
            // points) only ever remove the space after them, never text before.
            assert!(b.starts_with(&a), "{a:?} is not a prefix of {b:?}");
        }
    }

    #[test]
    fn sentence_starts_are_capitalised() {
        assert_eq!(
            capitalise_sentences("a dog runs. “is it fast?” yes! e.g. 3.5 m"),
            "A dog runs. “Is it fast?” Yes! E.g. 3.5 m"
        );
        assert_eq!(capitalise_sentences("   éin test."), "   Éin test.");
        assert_eq!(capitalise_sentences(""), "");
    }
}
