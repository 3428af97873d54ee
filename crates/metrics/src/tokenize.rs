//! sacreBLEU's tokenizers: `13a` (mteval-v13a, the default), `intl` (mteval-v14 international),
//! `char` and `none`.

use std::sync::OnceLock;

use regex::Regex;

use crate::py_split;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokenizer {
    None,
    Thirteen,
    Intl,
    Char,
}

impl Tokenizer {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "13a" => Self::Thirteen,
            "intl" => Self::Intl,
            "char" => Self::Char,
            _ => return None,
        })
    }

    pub fn signature(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Thirteen => "13a",
            Self::Intl => "intl",
            Self::Char => "char",
        }
    }

    pub fn tokenize(self, line: &str) -> String {
        match self {
            Self::None => line.to_string(),
            Self::Thirteen => tok_13a(line),
            Self::Intl => tok_intl(line),
            Self::Char => line.chars().map(String::from).collect::<Vec<_>>().join(" "),
        }
    }
}

fn join_words(s: &str) -> String {
    py_split(s).collect::<Vec<_>>().join(" ")
}

fn tok_13a(line: &str) -> String {
    static RE: OnceLock<[Regex; 4]> = OnceLock::new();
    let re = RE.get_or_init(|| {
        [
            Regex::new(r"([\{-~\[-` -&\(-\+:-@/])").unwrap(),
            Regex::new(r"([^0-9])([\.,])").unwrap(),
            Regex::new(r"([\.,])([^0-9])").unwrap(),
            Regex::new(r"([0-9])(-)").unwrap(),
        ]
    });
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut s = format!(" {line} ");
    s = re[0].replace_all(&s, " ${1} ").into_owned();
    s = re[1].replace_all(&s, "${1} ${2} ").into_owned();
    s = re[2].replace_all(&s, " ${1} ${2}").into_owned();
    s = re[3].replace_all(&s, "${1} ${2} ").into_owned();
    join_words(&s)
}

fn tok_intl(line: &str) -> String {
    static RE: OnceLock<[Regex; 3]> = OnceLock::new();
    let re = RE.get_or_init(|| {
        [
            Regex::new(r"(\P{N})(\p{P})").unwrap(),
            Regex::new(r"(\p{P})(\P{N})").unwrap(),
            Regex::new(r"(\p{S})").unwrap(),
        ]
    });
    let mut s = re[0].replace_all(line, "${1} ${2} ").into_owned();
    s = re[1].replace_all(&s, " ${1} ${2}").into_owned();
    s = re[2].replace_all(&s, " ${1} ").into_owned();
    join_words(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirteen_a_like_mteval() {
        // sacrebleu.tokenizers.tokenizer_13a.Tokenizer13a()(s) for each s:
        let t = Tokenizer::Thirteen;
        assert_eq!(
            t.tokenize("Hello, world. It costs $3.50 (approx.)!"),
            "Hello , world . It costs $ 3.50 ( approx . ) !"
        );
        assert_eq!(
            t.tokenize("1,000-2,000 and 3.5-4"),
            "1,000 - 2,000 and 3.5 - 4"
        );
        assert_eq!(t.tokenize("A &amp; B &quot;x&quot;"), "A & B \" x \"");
        assert_eq!(t.tokenize("don't"), "don't");
    }
}
