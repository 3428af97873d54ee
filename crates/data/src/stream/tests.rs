use super::*;
use crate::corpus::{read_lines, read_parallel, read_tsv};
use crate::{Level, Vocab, VocabSpec};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("s2s-stream-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn all(source: &StreamSource, pos: StreamPos) -> Vec<(u64, Pair)> {
    PairStream::open(source, pos)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_stream_reads_what_the_whole_file_readers_read_and_resumes_anywhere() {
    let d = dir("resume");
    let src: String = (0..50).map(|i| format!("source {i}\r\n")).collect();
    let tgt: String = (0..50).map(|i| format!("zïel {i}\n")).collect();
    let a = write(&d, "t.en", src.as_bytes());
    let b = write(&d, "t.de", tgt.trim_end().as_bytes()); // no final line break
    let source = StreamSource::Parallel {
        src: a.clone(),
        tgt: b.clone(),
    };
    let whole = read_parallel(&a, &b).unwrap();
    let streamed = all(&source, StreamPos::default());
    assert_eq!(streamed.len(), 50);
    for (i, (n, p)) in streamed.iter().enumerate() {
        assert_eq!((*n, p), (i as u64, &whole[i]));
    }
    // Reopened at the position after any item, the stream goes on with the next one.
    let mut s = PairStream::open(&source, StreamPos::default()).unwrap();
    for k in 0..50 {
        let pos = s.pos();
        let rest = all(&source, pos);
        assert_eq!(rest, streamed[k..].to_vec());
        s.next_item().unwrap();
    }
    assert_eq!(count_items(&source).unwrap(), 50);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn tsv_and_line_streams_skip_blank_lines_and_name_bad_ones() {
    let d = dir("tsv");
    let t = write(&d, "fra.txt", b"Go.\tVa !\tCC\n\n  \nHi.\tSalut !\n");
    let source = StreamSource::Tsv {
        path: t.clone(),
        src_col: 1,
        tgt_col: 0,
    };
    let got: Vec<Pair> = all(&source, StreamPos::default())
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(got, read_tsv(&t, 1, 0).unwrap());
    assert_eq!(count_items(&source).unwrap(), 2);
    let lines = StreamSource::Lines { path: t.clone() };
    let got: Vec<String> = all(&lines, StreamPos::default())
        .into_iter()
        .map(|(_, p)| p.tgt)
        .collect();
    let whole: Vec<String> = read_lines(&t)
        .unwrap()
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(got, whole);

    let err = |source: &StreamSource| {
        PairStream::open(source, StreamPos::default())
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err()
            .to_string()
    };
    let bad = write(&d, "bad.txt", b"a\tb\n\nno tab\n");
    let e = err(&StreamSource::Tsv {
        path: bad,
        src_col: 0,
        tgt_col: 1,
    });
    assert!(
        e.ends_with("bad.txt:3: expected at least 2 tab-separated columns, found 1"),
        "{e}"
    );
    let bad = write(&d, "utf.txt", b"ok\nz\xffz\n");
    let e = err(&StreamSource::Lines { path: bad });
    assert!(e.ends_with("utf.txt:2: invalid UTF-8"), "{e}");
    let mut long = b"short\n".to_vec();
    long.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 1));
    let long = write(&d, "long.txt", &long);
    let e = err(&StreamSource::Lines { path: long });
    assert!(
        e.contains("long.txt:2") && e.contains("limit of 1048576"),
        "{e}"
    );
    // A line of exactly the limit, with CR LF, is accepted.
    let mut edge = vec![b'y'; MAX_LINE_BYTES];
    edge.extend(b"\r\nz\n");
    let edge = write(&d, "edge.txt", &edge);
    assert_eq!(
        all(&StreamSource::Lines { path: edge }, StreamPos::default()).len(),
        2
    );
    let a = write(&d, "p.en", b"1\n2\n3\n");
    let b = write(&d, "p.de", b"1\n2\n");
    let e = err(&StreamSource::Parallel {
        src: a.clone(),
        tgt: b.clone(),
    });
    assert!(
        e.contains("p.de ends after 2 lines but") && e.contains("p.en has more"),
        "{e}"
    );
    let e = err(&StreamSource::Parallel { src: b, tgt: a });
    assert!(e.contains("p.de ends after 2 lines"), "{e}");
    let missing = StreamSource::Lines {
        path: d.join("missing.txt"),
    };
    let e = PairStream::open(&missing, StreamPos::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing.txt"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn held_out_items_are_distinct_seeded_and_read_back_in_order() {
    let (v, t) = held_out(1000, 30, 20, 7);
    assert_eq!((v.len(), t.len()), (30, 20));
    let mut both: Vec<u64> = v.iter().chain(&t).copied().collect();
    both.sort_unstable();
    both.dedup();
    assert_eq!(both.len(), 50);
    assert!(both.iter().all(|&n| n < 1000));
    assert_eq!(held_out(1000, 30, 20, 7), (v.clone(), t.clone()));
    assert_ne!(held_out(1000, 30, 20, 8).0, v);
    // Spread over the whole corpus, not bunched at its end.
    assert!(v.iter().filter(|&&n| n < 500).count() >= 5, "{v:?}");
    // A corpus no larger than the held-out sets is all held out.
    let (v, t) = held_out(10, 8, 5, 1);
    assert_eq!((v.len(), t.len()), (8, 2));

    let d = dir("items");
    let f = write(
        &d,
        "l.txt",
        (0..100)
            .map(|i| format!("line {i}\n"))
            .collect::<String>()
            .as_bytes(),
    );
    let got = read_items(&StreamSource::Lines { path: f }, &[42, 3, 99]).unwrap();
    let texts: Vec<&str> = got.iter().map(|p| p.tgt.as_str()).collect();
    assert_eq!(texts, ["line 42", "line 3", "line 99"]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_vocabulary_trained_on_a_stream_equals_one_trained_on_the_texts() {
    let texts: Vec<String> = (0..300)
        .map(|i| format!("the cat {} sat on mat {}", i % 17, i % 5))
        .collect();
    for level in [Level::Word, Level::Char, Level::Bpe] {
        let spec = VocabSpec {
            level,
            lowercase: true,
            min_freq: 2,
            max_size: 60,
        };
        let whole = Vocab::train(&spec, &texts).unwrap();
        let streamed = Vocab::train_stream(&spec, texts.iter().cloned().map(Ok)).unwrap();
        assert_eq!(
            whole.to_json().unwrap(),
            streamed.to_json().unwrap(),
            "{level:?}"
        );
    }
    let spec = VocabSpec {
        level: Level::Word,
        lowercase: false,
        min_freq: 1,
        max_size: 0,
    };
    let broken = texts
        .iter()
        .cloned()
        .map(Ok)
        .take(10)
        .chain(std::iter::once(Err(DataError::Utf8 {
            path: "corpus.txt".into(),
            line: 11,
        })));
    let e = Vocab::train_stream(&spec, broken)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(e, "corpus.txt:11: invalid UTF-8");
}
