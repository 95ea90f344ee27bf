// Cantata Studio: wires the compose form, the takes list and the server's history together.
// Every server call is a Runware task through RunwareClient (see api.js).

import {AuthError, RunwareClient, uuid} from './api.js';
import {buildTask, clearErrors, presets, randomSeed, readForm, restoreForm, saveForm, savePresets, setSource,
  showError, stateFromRequest, writeForm} from './form.js';

const KEY_STORE = 'cantata.studio.apiKey';
const POLL_MS = 400;
const HISTORY_PAGE = 10;
const $ = (id) => document.getElementById(id);

let client;
let historyCursor = null;

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

// -- models ------------------------------------------------------------------------------------

async function loadModels() {
  const reply = await client.send({taskType: 'modelSearch', category: 'checkpoint', limit: 100});
  const select = $('model');
  const chosen = select.value || readSaved().model;
  const models = reply.data[0]?.results || [];
  select.replaceChildren(...models.map((m) => new Option(`${m.name} (${m.air})`, m.air)));
  if (models.some((m) => m.air === chosen)) select.value = chosen;
}

function readSaved() {
  try { return JSON.parse(localStorage.getItem('cantata.studio.form') || '{}'); } catch { return {}; }
}

// -- one take: submit, follow, show ---------------------------------------------------------------

async function generate() {
  clearErrors();
  if (!$('seedLock').checked || $('seed').value === '') $('seed').value = randomSeed();
  saveForm();
  const task = buildTask(readForm());
  task.taskUUID = uuid();
  const view = addTaskView(task.taskUUID, task, 'top');
  setStatus(view, 'submitting');
  const ack = await client.send(task);
  if (ack.errors.length) {
    view.remove();
    ack.errors.forEach(showError);
    return;
  }
  setStatus(view, 'queued');
  follow(task.taskUUID, task, view);
}

async function follow(taskUUID, request, view) {
  const wanted = request.numberResults || 1;
  for (;;) {
    const reply = await client.send({taskType: 'getResponse', taskUUID});
    const error = reply.errors[0];
    const done = reply.data.filter((d) => d.status === 'success');
    const running = reply.data.find((d) => d.status === 'processing');
    if (error) { finish(view, error); return; }
    if (done.length >= wanted) { showResults(view, request, done); finish(view); return; }
    if (running) {
      view.querySelector('.task-progress').value = running.progress || 0;
      setStatus(view, running.progress > 0 ? `running ${running.progress}%` : 'queued');
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function addTaskView(taskUUID, request, where) {
  const view = $('task-template').content.firstElementChild.cloneNode(true);
  view.dataset.task = taskUUID;
  view.querySelector('.task-title').textContent = request.positivePrompt || '(no caption)';
  view.querySelector('.task-cancel').onclick = async () => {
    const reply = await client.send({taskType: 'cancel', taskUUID});
    if (reply.errors.length) view.querySelector('.task-error').textContent = reply.errors[0].message;
  };
  view.querySelector('.task-delete').onclick = async () => {
    const reply = await client.send({taskType: 'taskHistory', operation: 'delete', target: taskUUID});
    if (reply.errors.length) view.querySelector('.task-error').textContent = reply.errors[0].message;
    else view.remove();
  };
  if (where === 'top') $('tasks').prepend(view); else $('tasks').append(view);
  return view;
}

function setStatus(view, text) { view.querySelector('.task-status').textContent = text; }

function finish(view, error) {
  view.querySelector('.task-cancel').hidden = true;
  view.querySelector('.task-delete').hidden = false;
  view.querySelector('.task-progress').hidden = true;
  if (error) {
    setStatus(view, error.code === 'taskCancelled' ? 'cancelled' : 'failed');
    view.querySelector('.task-error').textContent = error.message;
  } else {
    setStatus(view, 'done');
  }
}

function showResults(view, request, results) {
  const list = view.querySelector('.results');
  list.replaceChildren(...results.map((result) => {
    const item = $('result-template').content.firstElementChild.cloneNode(true);
    const audio = item.querySelector('audio');
    audio.src = result.audioURL;
    audio.setAttribute('aria-label', `Take with seed ${result.seed}`);
    const settings = [request.model, request.steps && `${request.steps} steps`, request.settings?.bpm && `${request.settings.bpm} bpm`,
      request.settings?.keyScale, request.inputs?.audio && 'repaint'].filter(Boolean).join(' · ');
    item.querySelector('.result-meta').textContent = `seed ${result.seed} · ${settings}`;
    item.dataset.seed = result.seed;
    const link = item.querySelector('.result-download');
    link.href = result.audioURL;
    link.textContent = `Download ${(request.outputFormat || 'MP3').toUpperCase()}`;
    item.querySelector('.result-reuse').onclick = () => {
      writeForm(stateFromRequest(request, result.seed));
      saveForm();
      $('positivePrompt').focus();
    };
    item.querySelector('.result-repaint').onclick = () => {
      setSource(result.audioUUID, audio.duration || request.duration);
      saveForm();
    };
    return item;
  }));
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
    else { setStatus(view, entry.status); follow(entry.taskUUID, entry.request, view); }
  }
  historyCursor = page.nextCursor || null;
  $('history-more').hidden = !historyCursor;
}

// -- wiring -----------------------------------------------------------------------------------

function wire() {
  $('compose').addEventListener('submit', (e) => { e.preventDefault(); generate(); });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); generate(); }
  });
  $('compose').addEventListener('change', saveForm);
  $('compose').addEventListener('input', saveForm);
  $('instrumental').addEventListener('change', () => { $('lyrics').disabled = $('instrumental').checked; });
  for (const button of document.querySelectorAll('[data-tag]')) {
    button.onclick = () => insertTag(button.dataset.tag);
  }
  $('seed-random').onclick = () => { $('seed').value = randomSeed(); saveForm(); };
  $('source-clear').onclick = () => { writeForm({sourceAudio: '', repaintingStart: '', repaintingEnd: ''}); saveForm(); };
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
  $('source-file').addEventListener('change', uploadSource);
  $('history-more').onclick = loadHistory;
  $('change-key').onclick = async () => {
    localStorage.removeItem(KEY_STORE);
    location.reload();
  };
}

// A file picked as the repaint source goes up with mediaStorage; its mediaUUID is the source.
async function uploadSource() {
  const file = $('source-file').files[0];
  if (!file) return;
  clearErrors();
  const media = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
  const reply = await client.send({taskType: 'mediaStorage', operation: 'upload', media});
  if (reply.errors.length) { reply.errors.forEach(showError); return; }
  const duration = await new Promise((resolve) => {
    const probe = new Audio(URL.createObjectURL(file));
    probe.onloadedmetadata = () => resolve(probe.duration);
    probe.onerror = () => resolve(0);
  });
  setSource(reply.data[0].mediaUUID, duration);
  saveForm();
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
}

async function main() {
  wire();
  restoreForm();
  savePresets(presets());
  try {
    client = await connect();
  } catch (err) {
    $('connection').textContent = `cannot reach the server: ${err.message}`;
    return;
  }
  $('connection').textContent = `connected (${client.transport})`;
  await loadModels();
  await loadHistory();
  document.body.dataset.ready = 'true';
}

main();
