// The page of `seq2seq serve` in headless Chromium: it must show what the API returns.
// Usage: node page.mjs BASE_URL PICTURE.png SHOTS_DIR   (run by tests/serve/browser.rs)
import { mkdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const [base, picture, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });

async function api(path, body) {
  const init = body instanceof FormData
    ? { method: "POST", body }
    : { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(base + path, init);
  const json = await r.json();
  assert.equal(r.status, 200, JSON.stringify(json));
  return json;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 820 } });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}`));
  page.on("request", (r) => r.url().startsWith(base) || r.url().startsWith(`blob:${base}`) || problems.push(`off-server request: ${r.url()}`));
  await page.goto(base + "/");
  await page.waitForSelector('body[data-ready="true"]');

  await translate(page);
  await caption(page);
  await generate(page);
  await phone(page);
} finally {
  await browser.close();
}
assert.deepEqual(problems, []);
console.log("browser suite: all checks passed");

async function translate(page) {
  const text = "the 3rd of march 1987";
  await page.fill("#src", text);
  await page.selectOption("#translate-form select[name=strategy]", "beam");
  await page.fill("#translate-form input[name=beam_size]", "4");
  await page.fill("#translate-form input[name=n_best]", "3");
  // Keyboard: Ctrl+Enter in the text box translates.
  await page.focus("#src");
  await page.keyboard.press("Control+Enter");
  await page.waitForSelector("#nbest li");
  const model = await page.inputValue("#translate-form select.model");
  const want = await api("/v1/translate", {
    model, texts: [text], strategy: "beam", beam_size: 4, n_best: 3, attention: true,
  });
  const list = want.translations[0].n_best;
  const shown = await page.$$eval("#nbest .text", (els) => els.map((e) => e.textContent));
  assert.deepEqual(shown, list.map((h) => h.text), "the n-best list is the API's");
  for (const i of [1, 0]) {
    await page.click(`#nbest li:nth-child(${i + 1}) button`);
    const cells = await page.$$eval("#heatmap tbody tr", (rows) =>
      rows.map((r) => [...r.querySelectorAll("td")].map((td) => Number(td.dataset.w))));
    assert.deepEqual(cells, list[i].attention.weights, `heat-map of translation ${i}`);
    const cols = await page.$$eval("#heatmap thead th[scope=col]", (t) => t.map((e) => e.textContent));
    assert.deepEqual(cols, list[i].attention.source_tokens);
  }
  await page.screenshot({ path: `${shots}/translate.png` });
  console.log(`translate: ${JSON.stringify(shown)} as the API`);
}

async function caption(page) {
  // Tabs by keyboard: from Translate, the right arrow selects Caption.
  await page.focus("#tab-translate");
  await page.keyboard.press("ArrowRight");
  assert.equal(await page.getAttribute("#tab-caption", "aria-selected"), "true");
  assert.equal(await page.isVisible("#caption"), true);
  await page.setInputFiles("#image", picture);
  await page.waitForFunction(() => document.querySelector("#caption-text").textContent.length > 0);
  const shown = await page.textContent("#caption-text");
  const form = new FormData();
  form.append("model", await page.inputValue("#caption-form select.model"));
  form.append("attention", "true");
  form.append("image", new Blob([await readFile(picture)], { type: "image/png" }), "circle.png");
  const want = (await api("/v1/caption", form)).captions[0];
  assert.equal(shown, want.text, "the caption is the API's");
  const words = await page.$$eval("#words button", (b) => b.map((e) => e.textContent));
  assert.deepEqual(words, want.attention.tokens);
  await page.focus("#words button");
  const [rows, cols] = want.attention.grid;
  const size = await page.$eval("#overlay", (c) => [c.height, c.width]);
  assert.deepEqual(size, [rows, cols], "the overlay is the attention grid");
  await page.screenshot({ path: `${shots}/caption.png` });
  console.log(`caption: "${shown}" as the API, overlay ${rows}x${cols}`);
}

/** Waits for the distribution table to show the options the form holds now. */
async function shownDistribution(page) {
  await page.waitForFunction(() => {
    const f = new FormData(document.querySelector("#generate-form"));
    const o = { model: f.get("model"), prompt: f.get("prompt"), temperature: Number(f.get("temperature")),
      top_k: Number(f.get("top_k")), top_p: Number(f.get("top_p")) };
    return document.querySelector("#dist").dataset.for === JSON.stringify(o);
  });
  const options = JSON.parse(await page.getAttribute("#dist", "data-for"));
  const rows = await page.$$eval("#dist tbody tr", (trs) => trs.map((tr) => ({
    token: Number(tr.dataset.token),
    p: [...tr.querySelectorAll("td[data-p]")].map((td) => Number(td.dataset.p)),
  })));
  return { options, rows };
}

async function generate(page) {
  await page.click("#tab-generate");
  await page.fill("#prompt", "item 3");
  // Sliders by keyboard: temperature 1.00 → 1.30, top-k off → 3.
  await page.focus("#temperature");
  for (let i = 0; i < 6; i++) await page.keyboard.press("ArrowRight");
  await page.focus("#top_k");
  for (let i = 0; i < 3; i++) await page.keyboard.press("ArrowRight");
  const { options, rows } = await shownDistribution(page);
  assert.equal(options.temperature, 1.3);
  assert.equal(options.top_k, 3);
  const want = await api("/v1/next-token", { ...options, top: 10 });
  assert.deepEqual(rows, want.candidates.map((c) => ({
    token: c.token, p: [c.p, c.p_temperature, c.p_top_k, c.p_top_p],
  })), "the distribution is the API's");
  assert.equal(rows.filter((r) => r.p[2] > 0).length, 3, "top-k 3 keeps three");
  console.log(`distribution: ${rows.length} candidates as the API, top-k keeps 3`);

  // Streaming must not move what is below the outputs.
  await page.evaluate(() => {
    const h = document.querySelector("#generate h2:last-of-type");
    window.tops = [];
    new MutationObserver(() => window.tops.push(h.getBoundingClientRect().top))
      .observe(document.querySelector("#sampled"), { childList: true, characterData: true, subtree: true });
  });
  await page.fill("#generate-form input[name=max_tokens]", "30");
  await page.fill("#generate-form input[name=seed]", "7");
  await page.click("#generate-form button[type=submit]");
  await page.waitForSelector('#greedy[data-done="true"]');
  await page.waitForSelector('#sampled[data-done="true"]');
  const common = { model: options.model, prompt: "item 3", max_tokens: 30 };
  const greedy = await api("/v1/generate", { ...common, strategy: "greedy" });
  const sampled = await api("/v1/generate", { ...common, strategy: "sample", temperature: 1.3,
    top_k: 3, top_p: 1, seed: 7 });
  assert.equal(await page.textContent("#greedy"), greedy.samples[0].text);
  assert.equal(await page.textContent("#sampled"), sampled.samples[0].text);
  const streamed = Number(await page.getAttribute("#sampled", "data-tokens") ?? 0);
  assert.equal(streamed, sampled.samples[0].tokens, "one token event per sampled token");
  const tops = await page.evaluate(() => window.tops);
  assert.ok(tops.length > 0, "the sampled output was streamed");
  assert.ok(tops.every((t) => t === tops[0]), `layout moved while streaming: ${tops}`);
  await page.screenshot({ path: `${shots}/generate.png`, fullPage: true });
  console.log(`generate: greedy and sampled (${streamed} streamed tokens) as the API`);
}

async function phone(page) {
  await page.setViewportSize({ width: 390, height: 844 });
  for (const tab of ["#tab-translate", "#tab-caption", "#tab-generate"]) {
    await page.click(tab);
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(wide <= 390, `${tab}: the page is ${wide}px wide at phone width`);
  }
  await page.screenshot({ path: `${shots}/phone-generate.png`, fullPage: true });
  console.log("phone width: no horizontal scrolling");
}
