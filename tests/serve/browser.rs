//! The web page in headless Chromium, driven by Playwright (`tests/browser/page.mjs`), against
//! a server with the test's models: the page must show what the API returns.
//!
//! It needs Node.js, Chromium (`/usr/bin/chromium`, or `CHROMIUM`) and `npm ci` run in
//! `tests/browser`; without them it says so and passes, unless `SEQ2SEQ_BROWSER_TESTS=1`
//! (set by `.ci/run`, which installs them) makes their absence a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{png, serve};

/// Node and Chromium, or why the browser test cannot run here.
fn browser() -> Result<(PathBuf, String), String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/playwright-core").is_dir() {
        return Err(format!(
            "{} has no node_modules/playwright-core (run `npm ci` there)",
            dir.display()
        ));
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!("no Chromium at {chromium} (set CHROMIUM)"));
    }
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => Ok((dir, chromium)),
        _ => Err("no `node` on the PATH".into()),
    }
}

#[test]
fn the_page_shows_what_the_api_returns() {
    let (dir, chromium) = match browser() {
        Ok(b) => b,
        Err(why) if std::env::var("SEQ2SEQ_BROWSER_TESTS").as_deref() != Ok("1") => {
            eprintln!("skipping the browser test: {why}");
            return;
        }
        Err(why) => panic!("SEQ2SEQ_BROWSER_TESTS=1 but {why}"),
    };
    let s = serve(&[]);
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("page-test");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let picture = work.join("circle.png");
    std::fs::write(&picture, png(64, 48, [30, 60, 220])).unwrap();
    let out = Command::new("node")
        .arg(dir.join("page.mjs"))
        .arg(&s.base)
        .arg(&picture)
        .arg(work.join("shots"))
        .env("CHROMIUM", chromium)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser suite failed:\n{log}");
    eprintln!("{log}");
}
