//! The synthetic translation task of the no-download quickstart: free-form English dates to
//! ISO 8601. It needs attention (the year, month and day move and change form) and is scored
//! by exact match.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::Pair;

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Day of the week, 0 = Monday (Sakamoto's method).
fn weekday(y: i32, m: u32, d: u32) -> usize {
    const T: [i32; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
    let y = if m < 3 { y - 1 } else { y };
    let dow = (y + y / 4 - y / 100 + y / 400 + T[m as usize - 1] + d as i32) % 7; // 0 = Sunday
    ((dow + 6) % 7) as usize
}

fn ordinal(d: u32) -> String {
    let suffix = match (d % 10, d % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{d}{suffix}")
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// One random date in one of 14 surface forms, with its ISO form.
fn date_pair(rng: &mut ChaCha8Rng) -> Pair {
    let y = rng.random_range(1900..=2099);
    let m = rng.random_range(1..=12u32);
    let d = rng.random_range(1..=days_in_month(y, m));
    let month = MONTHS[m as usize - 1];
    let mon = &month[..3];
    let wd = WEEKDAYS[weekday(y, m, d)];
    let yy = y % 100;
    let src = match rng.random_range(0..14) {
        0 => format!("{d} {month} {y}"),
        1 => format!("{month} {d}, {y}"),
        2 => format!("{} {}, {y}", cap(month), ordinal(d)),
        3 => format!("{d:02}.{m:02}.{y}"),
        4 => format!("{d}/{m}/{y}"),
        5 => format!("{wd}, {d} {month} {y}"),
        6 => format!("{}, {} {d}, {y}", cap(wd), cap(month)),
        7 => format!("{} {mon} {y}", ordinal(d)),
        8 => format!("{mon} {d} {y}"),
        9 => format!("the {} of {month} {y}", ordinal(d)),
        10 => format!("{} {d} {y}", cap(mon)),
        11 => format!("{}, {d} {} {y}", &wd[..3], cap(mon)),
        12 => format!("{d} {} '{yy:02}", mon.to_uppercase()),
        _ => format!("{y}/{m}/{d}"),
    };
    // The two-digit-year form is only unambiguous within one century.
    let y = if src.contains('\'') { 2000 + yy } else { y };
    Pair {
        src,
        tgt: format!("{y:04}-{m:02}-{d:02}"),
    }
}

/// `n` date pairs from `seed`; distinct seeds give practically disjoint sets.
pub fn dates(n: usize, seed: u64) -> Vec<Pair> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| date_pair(&mut rng)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_deterministic_and_correct() {
        assert_eq!(dates(50, 1), dates(50, 1));
        assert_ne!(dates(50, 1), dates(50, 2));
        assert_eq!(weekday(2026, 11, 27), 4); // a Friday
        assert_eq!(weekday(2000, 2, 29), 1); // a Tuesday
        for p in dates(2000, 9) {
            assert_eq!(p.tgt.len(), 10, "{p:?}");
            let (y, rest) = p.tgt.split_at(4);
            let m: u32 = rest[1..3].parse().unwrap();
            let d: u32 = rest[4..6].parse().unwrap();
            assert!(d >= 1 && d <= days_in_month(y.parse().unwrap(), m), "{p:?}");
        }
    }
}
