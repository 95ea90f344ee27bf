// Cantata Studio: wires the compose form, the takes list and the server's history together.
// Every server call is a Runware task through RunwareClient (see api.js); the one plain GET is a
// model's JSON Schema, which says what the model takes.

import {AuthError, CONNECTION_LOST, RunwareClient, uuid} from './api.js';
import {buildTask, clearErrors, fitTask, presets, randomSeed, readForm, restoreForm, saveForm, savedForm,
  savePresets, showError, stateFromRequest, writeForm} from './form.js';
import {applySchema, initSource, setSource} from './source.js';
import {clock, Wave} from './waveform.js';

const KEY_STORE = 'cantata.studio.apiKey';
const POLL_MS = 400;
const RETRY_MS = 2000;  // a poll the dropped connection failed is asked again after this (HTTP or a new socket)
const HISTORY_PAGE = 10;
const $ = (id) => document.getElementById(id);

let client;
let historyCursor = null;
let modelSchema = null;
const compare = {A: null, B: null};  // the two takes of the A/B comparison (their result items)

// -- connecting (and asking for a key when the server wants one) --------------------------------

async function connect() {
  const stored = localStorage.getItem(KEY_STORE) || '';
  for (let key = stored, first = true; ; first = false) {
    const candidate = new RunwareClient(key);
    try {
      await candidate.connect();
      if (key) localStorage.setItem(KEY_STORE, key);
      $('change-key').hidden = !key;
      return candidate;
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      $('key-error').textContent = key ? `This key was refused: ${err.message}` : (first ? '' : err.message);
      key = await askKey();
    }
  }
}

function askKey() {
  const dialog = $('key-dialog');
  return new Promise((resolve) => {
    $('key-form').onsubmit = () => resolve($('api-key').value.trim());
    dialog.showModal();
    $('api-key').focus();
  });
}

// -- models and what each one takes ---------------------------------------------------------------

async function loadModels() {
  const reply = await client.send({taskType: 'modelSearch', category: 'checkpoint', limit: 100});
  const select = $('model');
  const chosen = select.value || savedForm().model;
  const models = reply.data[0]?.results || [];
  select.replaceChildren(...models.map((m) => new Option(`${m.name} (${m.air})`, m.air)));
  if (models.some((m) => m.air === chosen)) select.value = chosen;
  await loadSchema();
}

// The model's JSON Schema: its audio-to-audio modes and stems, and which fields it takes at all.
async function loadSchema() {
  const air = $('model').value;
  modelSchema = null;
  if (air) {
    const response = await fetch(`/v1/models/${encodeURIComponent(air)}/schema.json`);
    if (response.ok) modelSchema = await response.json();
  }
  applySchema(modelSchema);
  // A field this model does not take (CFGScale and guidance on turbo models) is hidden.
  const takes = ([top, key]) => !modelSchema || (top === 'settings' ? key in modelSchema.properties.settings.properties
    : top in modelSchema.properties);
  for (const field of document.querySelectorAll('#advanced [data-param]')) {
    field.closest('.field').hidden = !takes(field.dataset.param.split('.'));
  }
  showRequest();
}

// -- one take: submit, follow, show ---------------------------------------------------------------

function nextTask() {
  return fitTask(buildTask(readForm()), modelSchema);
}

async function generate() {
  clearErrors();
  if (!$('seedLock').checked || $('seed').value === '') $('seed').value = randomSeed();
  saveForm();
  const task = nextTask();
  task.taskUUID = uuid();
  const view = addTaskView(task.taskUUID, task, 'top');
  setStatus(view, 'submitting', 'submitting');
  const ack = await client.send(task);
  if (ack.errors.length) {
    view.remove();
    ack.errors.forEach(showError);
    return;
  }
  setStatus(view, 'queued', 'queued');
  follow(task.taskUUID, task, view);
}

// Poll getResponse: a processing item with queuePosition is queued, one without is running
// (progress 0-100); both may carry an eta in seconds (Cantata extensions).
async function follow(taskUUID, request, view) {
  const wanted = request.numberResults || 1;
  for (;;) {
    const reply = await client.send({taskType: 'getResponse', taskUUID});
    const error = reply.errors[0];
    const done = reply.data.filter((d) => d.status === 'success');
    const pending = reply.data.find((d) => d.status === 'processing');
    if (error?.code === CONNECTION_LOST) { await pause(RETRY_MS); continue; }  // the task goes on: ask again
    if (error) { finish(view, error); return; }
    if (done.length >= wanted) { showResults(view, request, done); finish(view); return; }
    if (pending) showProgress(view, pending);
    await pause(POLL_MS);
  }
}

const pause = (ms) => new Promise((r) => setTimeout(r, ms));

function showProgress(view, item) {
  const eta = item.eta === undefined ? '' : ` · about ${Math.ceil(item.eta)} s left`;
  const bar = view.querySelector('.task-progress');
  if (item.queuePosition !== undefined) {
    const place = item.queuePosition === 0 ? 'next in line' : `${item.queuePosition} ahead`;
    bar.removeAttribute('value');  // indeterminate while waiting
    setStatus(view, `queued · ${place}${eta}`, 'queued');
  } else {
    bar.value = item.progress || 0;
    setStatus(view, `running ${item.progress || 0}%${eta}`, 'running');
  }
}

function addTaskView(taskUUID, request, where) {
  const view = $('task-template').content.firstElementChild.cloneNode(true);
  view.dataset.task = taskUUID;
  view.querySelector('.task-title').textContent = request.positivePrompt || '(no caption)';
  view.querySelector('.task-kind').textContent = kindOf(request);
  view.querySelector('.task-cancel').onclick = async () => {
    const reply = await client.send({taskType: 'cancel', taskUUID});
    if (reply.errors.length) view.querySelector('.task-error').textContent = reply.errors[0].message;
  };
  view.querySelector('.task-delete').onclick = async () => {
    const reply = await client.send({taskType: 'taskHistory', operation: 'delete', target: taskUUID});
    if (reply.errors.length) { view.querySelector('.task-error').textContent = reply.errors[0].message; return; }
    for (const item of view.querySelectorAll('.result')) item.player?.destroy();
    view.remove();
  };
  if (where === 'top') $('tasks').prepend(view); else $('tasks').append(view);
  return view;
}

function kindOf(request) {
  const s = request.settings || {};
  if (!request.inputs?.audio) return 'text to music';
  if (s.task) return s.task;
  if (s.repaintingStart < 0) return 'outpaint';
  if (s.repaintingStart !== undefined || s.repaintingEnd !== undefined) return 'repaint';
  return 'cover';
}

function setStatus(view, text, state) {
  view.querySelector('.task-status').textContent = text;
  view.dataset.state = state;
}

function finish(view, error) {
  view.querySelector('.task-cancel').hidden = true;
  view.querySelector('.task-delete').hidden = false;
  view.querySelector('.task-progress').hidden = true;
  if (error) {
    const cancelled = error.code === 'taskCancelled';
    setStatus(view, cancelled ? 'cancelled' : 'failed', cancelled ? 'cancelled' : 'failed');
    view.querySelector('.task-error').textContent = error.message;
  } else {
    setStatus(view, 'done', 'done');
  }
}

function showResults(view, request, results) {
  const items = results.map((result) => resultItem(request, result));
  view.querySelector('.results').replaceChildren(...items);
  for (const item of items) whenVisible(item, () => attachPlayer(item, `Take with seed ${item.dataset.seed}`));
}

function resultItem(request, result) {
  const item = $('result-template').content.firstElementChild.cloneNode(true);
  const audio = item.querySelector('audio');
  audio.src = result.audioURL;
  item.dataset.seed = result.seed;
  item.dataset.audio = result.audioUUID;
  const settings = [request.model, request.steps && `${request.steps} steps`, request.settings?.bpm && `${request.settings.bpm} bpm`,
    request.settings?.keyScale, kindOf(request)].filter(Boolean).join(' · ');
  item.querySelector('.result-meta').textContent = `seed ${result.seed} · ${settings}`;
  const link = item.querySelector('.result-download');
  const made = (request.outputFormat || 'MP3').toUpperCase();
  link.href = result.audioURL;
  link.textContent = `Download ${made}`;
  for (const format of ['MP3', 'WAV', 'FLAC', 'OGG'].filter((f) => f !== made).reverse()) {
    // The server converts a result to another format on request (lossy stays lossy).
    const other = link.cloneNode();
    other.href = result.audioURL.replace(/\.[a-z0-9]+$/, `.${format.toLowerCase()}`);
    other.textContent = format;
    other.setAttribute('aria-label', `Download as ${format}`);
    other.classList.replace('result-download', 'result-download-as');
    link.after(other);
  }
  const length = () => audio.duration || item.player?.duration || request.duration;
  const selection = () => {
    const region = item.player?.region;
    return region ? [region.start, region.end] : undefined;
  };
  const source = (mode) => ({audio: result.audioUUID, url: result.audioURL, duration: length(),
    name: `take with seed ${result.seed}`, mode, region: mode === 'repaint' ? selection() : undefined});
  item.querySelector('.result-reuse').onclick = () => {
    writeForm(stateFromRequest(request, result.seed));
    saveForm();
    $('positivePrompt').focus();
  };
  item.querySelector('.result-repaint').onclick = () => setSource(source('repaint'));
  item.querySelector('.result-cover').onclick = () => setSource(source('cover'));
  for (const slot of ['A', 'B']) {
    item.querySelector(`.result-${slot.toLowerCase()}`).onclick = () => setCompare(slot, item);
  }
  return item;
}

// Waveforms are drawn when a take scrolls into view: a long history costs nothing until then.
function whenVisible(element, draw) {
  const seen = new IntersectionObserver((entries) => {
    if (!entries.some((e) => e.isIntersecting)) return;
    seen.disconnect();
    draw();
  });
  seen.observe(element);
}

function attachPlayer(item, label) {
  const audio = item.querySelector('audio');
  const player = new Wave(item.querySelector('.wave'), {url: audio.src, media: audio, label});
  item.player = player;
  const play = item.querySelector('.result-play');
  const time = item.querySelector('.result-time');
  const loop = item.querySelector('.result-loop');
  play.onclick = () => player.playPause();
  loop.onchange = () => { player.loop = loop.checked; };
  player.on('play', () => { play.textContent = 'Pause'; play.setAttribute('aria-pressed', 'true'); });
  player.on('pause', () => { play.textContent = 'Play'; play.setAttribute('aria-pressed', 'false'); });
  player.on('timeupdate', (t) => { time.textContent = `${clock(t)} / ${clock(player.duration)}`; });
  player.ready.then(() => {
    time.textContent = `${clock(0)} / ${clock(player.duration)}`;
    item.dataset.ready = 'true';
  }, () => { time.textContent = 'this audio cannot be drawn here'; });
}

// -- A/B: two takes, one switch that keeps the playing position ------------------------------------

function setCompare(slot, item) {
  compare[slot]?.querySelector(`.result-${slot.toLowerCase()}`).setAttribute('aria-pressed', 'false');
  compare[slot] = item;
  item.querySelector(`.result-${slot.toLowerCase()}`).setAttribute('aria-pressed', 'true');
  $(`ab-${slot.toLowerCase()}`).textContent = `${slot}: seed ${item.dataset.seed}`;
  $('ab').hidden = false;
  $('ab-switch').disabled = !(compare.A && compare.B);
}

function switchCompare() {
  const {A, B} = compare;
  if (!A?.player || !B?.player) return;
  const [from, to] = B.player.playing ? [B, A] : [A, B];
  const at = from.player.time();
  const playing = from.player.playing || !to.player.playing;
  from.player.pause();
  to.player.seek(at);
  if (playing) to.player.play();
  $('ab-now').textContent = `playing ${to === A ? 'A' : 'B'}`;
}

// -- history (the server's, per API key) ----------------------------------------------------------

async function loadHistory() {
  const task = {taskType: 'taskHistory', limit: HISTORY_PAGE};
  if (historyCursor) task.cursor = historyCursor;
  const reply = await client.send(task);
  if (reply.errors.length) { $('form-error').textContent = reply.errors[0].message; return; }
  const page = reply.data[0];
  for (const entry of page.items) {
    if (document.querySelector(`[data-task="${entry.taskUUID}"]`)) continue;
    const view = addTaskView(entry.taskUUID, entry.request, 'bottom');
    if (entry.status === 'success') { showResults(view, entry.request, entry.results); finish(view); }
    else if (entry.error) finish(view, entry.error);
    else { setStatus(view, entry.status, entry.status); follow(entry.taskUUID, entry.request, view); }
  }
  historyCursor = page.nextCursor || null;
  $('history-more').hidden = !historyCursor;
}

// -- the request the form makes, shown as JSON ------------------------------------------------------

function showRequest() {
  const task = nextTask();
  $('request-json').textContent = JSON.stringify([{...task, taskUUID: '…'}], null, 2);
}

// -- wiring -----------------------------------------------------------------------------------

function wire() {
  $('compose').addEventListener('submit', (e) => { e.preventDefault(); generate(); });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); generate(); }
  });
  for (const event of ['change', 'input']) {
    $('compose').addEventListener(event, () => { saveForm(); showRequest(); });
  }
  document.addEventListener('form-written', showRequest);
  $('model').addEventListener('change', loadSchema);
  $('instrumental').addEventListener('change', () => { $('lyrics').disabled = $('instrumental').checked; });
  for (const button of document.querySelectorAll('[data-tag]')) {
    button.onclick = () => insertTag(button.dataset.tag);
  }
  $('seed-random').onclick = () => { $('seed').value = randomSeed(); saveForm(); showRequest(); };
  $('preset-save').onclick = () => {
    const name = $('preset-name').value.trim();
    if (!name) { $('preset-name').focus(); return; }
    savePresets({...presets(), [name]: readForm()});
    $('preset-list').value = name;
  };
  $('preset-load').onclick = () => {
    const chosen = presets()[$('preset-list').value];
    if (chosen) { writeForm(chosen); saveForm(); }
  };
  $('preset-delete').onclick = () => {
    const all = presets();
    delete all[$('preset-list').value];
    savePresets(all);
  };
  $('history-more').onclick = loadHistory;
  $('ab-switch').onclick = switchCompare;
  $('change-key').onclick = async () => {
    localStorage.removeItem(KEY_STORE);
    location.reload();
  };
}

// Put a section tag on its own line at the cursor.
function insertTag(tag) {
  const lyrics = $('lyrics');
  if (lyrics.disabled) return;
  const {selectionStart: at, value} = lyrics;
  const before = value.slice(0, at);
  const text = `${before && !before.endsWith('\n') ? '\n' : ''}${tag}\n`;
  lyrics.setRangeText(text, at, lyrics.selectionEnd, 'end');
  lyrics.focus();
  saveForm();
  showRequest();
}

async function main() {
  wire();
  initSource(() => client);
  restoreForm();
  savePresets(presets());
  try {
    client = await connect();
  } catch (err) {
    $('connection').textContent = `cannot reach the server: ${err.message}`;
    return;
  }
  const showTransport = (transport) => { $('connection').textContent = `connected (${transport})`; };
  showTransport(client.transport);
  client.onTransportChange = showTransport;
  await loadModels();
  await loadHistory();
  document.body.dataset.ready = 'true';
}

main();
