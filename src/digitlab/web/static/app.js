// The draw-a-digit page: pointer events on a canvas, throttled predictions, results.
// No libraries and nothing from other hosts, so the page works offline.
"use strict";

const MIN_INTERVAL_MS = 150;  // at most ~6 predictions a second while drawing
const PEN_WIDTH = 20;         // of 280 px: about 2 px once scaled into MNIST's 20x20 box

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const labelEl = document.getElementById("label");
const confidenceEl = document.getElementById("confidence");
const statusEl = document.getElementById("status");
const barsEl = document.getElementById("bars");
const seen = document.getElementById("seen");
const thresholdEl = document.getElementById("min-confidence");
const thresholdValueEl = document.getElementById("min-confidence-value");
const whyEl = document.getElementById("why");
const whyKeyEl = document.getElementById("why-key");
const whyMethodEl = document.getElementById("why-method");
// matplotlib's RdBu_r ends, as `digitlab predict --explain` colours its heat maps.
const SUPPORTS = [178, 24, 43];
const AGAINST = [33, 102, 172];

let hasInk = false;      // nothing to ask about on a blank pad
let drawing = null;      // the pointer drawing now, and its last point
let dirty = false;       // the drawing changed since the last request was sent
let inFlight = false;    // one request at a time: answers arrive in order
let lastSent = 0;
let timer = null;
let epoch = 0;           // bumped by Clear, so a late answer for an old drawing is dropped
let lastAnswer = null;   // redrawn plain when "Why?" is turned off, without asking again

// ------------------------------------------------------------ drawing

function clearPad() {
  ctx.fillStyle = "#000";  // opaque black, as MNIST's background
  ctx.fillRect(0, 0, pad.width, pad.height);
  hasInk = false;
  dirty = false;
  epoch += 1;
  labelEl.textContent = "?";
  confidenceEl.textContent = "";
  showBars(null);
  lastAnswer = null;
  seen.getContext("2d").clearRect(0, 0, seen.width, seen.height);
  whyKeyEl.hidden = true;
  setStatus("Draw a digit, large and in the middle.");
  updateState();
}

function point(event) {
  // The canvas is 280x280 inside but may be shown smaller (phones): scale back.
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width,
          (event.clientY - box.top) * pad.height / box.height];
}

function stroke(from, to) {
  ctx.beginPath();
  if (from[0] === to[0] && from[1] === to[1]) {
    // A tap: a round dot. Some browsers (Chromium 156) draw nothing for a line of
    // length 0, round caps or not, and the pad would be sent blank.
    ctx.fillStyle = "#fff";
    ctx.arc(to[0], to[1], PEN_WIDTH / 2, 0, 2 * Math.PI);
    ctx.fill();
  } else {
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = PEN_WIDTH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.moveTo(from[0], from[1]);
    ctx.lineTo(to[0], to[1]);
    ctx.stroke();
  }
  hasInk = true;
  requestPrediction();
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);  // keep the stroke even if it leaves the pad
  document.body.dataset.pointer = event.pointerType;  // mouse, pen or touch: shown to tests
  const p = point(event);
  drawing = { id: event.pointerId, last: p };
  stroke(p, p);  // a tap is a dot
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing || event.pointerId !== drawing.id) return;
  const p = point(event);
  stroke(drawing.last, p);
  drawing.last = p;
});

function endStroke(event) {
  if (!drawing || event.pointerId !== drawing.id) return;
  drawing = null;
  requestPrediction();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

document.getElementById("clear").addEventListener("click", clearPad);

// Below this confidence the server answers "unknown"; a change re-reads the drawing.
function showThreshold() {
  thresholdValueEl.textContent = `${Math.round(100 * Number(thresholdEl.value))}%`;
}
thresholdEl.addEventListener("input", () => {
  showThreshold();
  if (hasInk) requestPrediction();
});

// "Why?" on: ask again with explain=true (the map costs a little time, so only when shown).
// Off: the plain image at once, from the last answer.
whyEl.addEventListener("change", () => {
  if (whyEl.checked && hasInk) requestPrediction();
  else if (lastAnswer) showSeen(lastAnswer);
});

// ------------------------------------------------------------ predicting

function requestPrediction() {
  dirty = true;
  pump();
}

// Send the drawing if it changed, no request is out, and the last one left long enough ago.
function pump() {
  updateState();
  if (inFlight || !dirty || !hasInk || timer !== null) return;
  const wait = lastSent + MIN_INTERVAL_MS - performance.now();
  if (wait > 0) {
    timer = setTimeout(() => { timer = null; pump(); }, wait);
    return;
  }
  dirty = false;
  inFlight = true;
  lastSent = performance.now();
  updateState();
  const sentEpoch = epoch;
  pad.toBlob(async (blob) => {
    try {
      const query = new URLSearchParams({ min_confidence: thresholdEl.value });
      if (whyEl.checked) query.set("explain", "true");
      const response = await fetch(`/predict?${query}`, {
        method: "POST", headers: { "Content-Type": "image/png" }, body: blob,
      });
      const answer = await response.json();
      if (sentEpoch !== epoch) return;  // cleared meanwhile
      if (response.ok) {
        showAnswer(answer);
      } else {
        setStatus(answer.error || `error ${response.status}`);
      }
    } catch (error) {
      setStatus(`no answer from the server (${error.message})`);
    } finally {
      inFlight = false;
      pump();
    }
  }, "image/png");
}

function showAnswer(answer) {
  if (answer.explanation) {  // the map's largest magnitude, once: the colours' full scale
    answer.explanation.peak = Math.max(...answer.explanation.map.flat().map(Math.abs));
  }
  labelEl.textContent = answer.name;
  const best = Math.max(...answer.probabilities);
  confidenceEl.textContent = answer.label === null
    ? `${(100 * best).toFixed(1)}% sure, below the ${thresholdValueEl.textContent} asked for`
    : `${(100 * best).toFixed(1)}% sure`;
  showBars(answer);
  lastAnswer = answer;
  showSeen(answer);
  setStatus("Keep drawing, or Clear to start again.");
  document.body.dataset.answers = String(Number(document.body.dataset.answers) + 1);
}

function showBars(answer) {
  const items = barsEl.children;
  for (let i = 0; i < items.length; i += 1) {
    const p = answer ? answer.probabilities[i] : 0;
    items[i].querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    items[i].querySelector(".value").textContent = answer ? `${(100 * p).toFixed(1)}%` : "";
    items[i].classList.toggle("best", Boolean(answer) && answer.label === answer.classes[i]);
  }
}

function buildBars(classNames) {
  barsEl.replaceChildren(...classNames.map((name) => {
    const item = document.createElement("li");
    const label = document.createElement("span");
    label.textContent = name;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    item.append(label, track, value);
    return item;
  }));
}

// The model's input, rows of 0..255, drawn one canvas pixel per image pixel (CSS upscales it);
// with "Why?" on and a map in the answer, each pixel is tinted by its attribution.
function showSeen(answer) {
  const rows = answer.input;
  const h = rows.length;
  const w = rows[0].length;
  const why = whyEl.checked && answer.explanation ? answer.explanation : null;
  seen.width = w;
  seen.height = h;
  const image = new ImageData(w, h);
  rows.forEach((row, y) => row.forEach((v, x) => {
    image.data.set(why ? tinted(v, why.map[y][x], why.peak) : [v, v, v], 4 * (y * w + x));
    image.data[4 * (y * w + x) + 3] = 255;
  }));
  seen.getContext("2d").putImageData(image, 0, 0);
  whyKeyEl.hidden = !why;
  whyMethodEl.textContent = why ? why.method : "";
}

// As digitlab.explain.overlay: the digit in dimmed grey, red (supports the answer) or blue
// (argues against it) over it, 0.85 opaque at the map's peak. The opacity follows the square
// root of |value| rather than |value|: on a 168-pixel square, a few strong pixels would
// otherwise leave the rest of the stroke looking untouched.
function tinted(v, value, peak) {
  const base = 0.15 * 255 + 0.6 * v;
  const alpha = peak > 0 ? 0.85 * Math.sqrt(Math.abs(value) / peak) : 0;
  const colour = value >= 0 ? SUPPORTS : AGAINST;
  return colour.map((c) => Math.round((1 - alpha) * base + alpha * c));
}

function setStatus(text) {
  statusEl.textContent = text;
}

// For people (a busy cursor) and for the browser test, which waits for "idle".
function updateState() {
  const busy = inFlight || (dirty && hasInk) || timer !== null;
  document.body.dataset.state = busy ? "busy" : "idle";
}

// ------------------------------------------------------------ tabs and the model

function showTab(name) {
  for (const tab of ["draw", "report"]) {
    document.getElementById(tab).hidden = tab !== name;
    document.getElementById(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
  }
  if (name === "report") loadReport();
}
document.getElementById("tab-draw").addEventListener("click", () => showTab("draw"));
document.getElementById("tab-report").addEventListener("click", () => showTab("report"));

async function loadReport() {
  const frame = document.getElementById("report-frame");
  const note = document.getElementById("no-report");
  if (frame.getAttribute("src")) return;
  const response = await fetch("/report", { method: "GET" });
  if (response.ok) {
    frame.src = "/report";
  } else {
    frame.hidden = true;
    note.hidden = false;
    note.textContent = (await response.json()).error;
  }
}

async function loadModel() {
  const response = await fetch("/model");
  const model = await response.json();
  buildBars(model.class_names);
  thresholdEl.value = String(model.min_confidence);  // the server's --min-confidence
  showThreshold();
  const accuracy = model.test_accuracy === null ? "test accuracy unknown"
    : `${(100 * model.test_accuracy).toFixed(1)}% test accuracy`;
  document.getElementById("model").textContent =
    `${model.kind} model, ${model.input_shape.join("×")} input, ${accuracy}`;
}

clearPad();
loadModel().catch((error) => setStatus(`cannot read the model (${error.message})`));
