// The compose form: its state as a plain object (saved in localStorage and in presets), the
// audioInference task it makes, and the server's errors shown next to the fields they name.

const STATE_KEY = 'cantata.studio.form';
const PRESETS_KEY = 'cantata.studio.presets';
const FIELDS = ['model', 'positivePrompt', 'lyrics', 'instrumental', 'duration', 'bpm', 'keyScale', 'timeSignature',
  'vocalLanguage', 'steps', 'guidanceType', 'CFGScale', 'cfgIntervalStart', 'cfgIntervalEnd', 'numberResults',
  'outputFormat', 'bitrate', 'negativePrompt', 'seed', 'seedLock', 'sourceAudio', 'repaintingStart', 'repaintingEnd'];
const MAX_SEED = 2 ** 53 - 1;  // what a JS number holds exactly; the server accepts up to 2^63-1

const $ = (id) => document.getElementById(id);

export function readForm() {
  const state = {};
  for (const name of FIELDS) {
    const el = $(name);
    state[name] = el.type === 'checkbox' ? el.checked : el.value;
  }
  return state;
}

export function writeForm(state) {
  for (const name of FIELDS) {
    if (!(name in state)) continue;
    const el = $(name);
    if (el.type === 'checkbox') el.checked = Boolean(state[name]); else el.value = state[name];
  }
  $('lyrics').disabled = $('instrumental').checked;
  showSource();
}

export function saveForm() { localStorage.setItem(STATE_KEY, JSON.stringify(readForm())); }
export function restoreForm() {
  try { writeForm(JSON.parse(localStorage.getItem(STATE_KEY) || '{}')); } catch { /* a corrupt entry: defaults */ }
}

export function randomSeed() { return Math.floor(Math.random() * MAX_SEED); }

// Numbers the user left empty are not sent: the server's own defaults (per model) apply.
const number = (v) => (v === '' || v === undefined ? undefined : Number(v));

export function buildTask(state) {
  const settings = {
    lyrics: state.instrumental || !state.lyrics.trim() ? undefined : state.lyrics,
    bpm: number(state.bpm), keyScale: state.keyScale || undefined, timeSignature: number(state.timeSignature),
    vocalLanguage: state.instrumental ? 'unknown' : (state.vocalLanguage || undefined),
    guidanceType: state.guidanceType || undefined,
    cfgIntervalStart: number(state.cfgIntervalStart), cfgIntervalEnd: number(state.cfgIntervalEnd),
  };
  const task = {
    taskType: 'audioInference', deliveryMethod: 'async', outputType: 'URL',
    model: state.model, positivePrompt: state.positivePrompt,
    negativePrompt: state.negativePrompt || undefined,
    steps: number(state.steps), CFGScale: number(state.CFGScale), seed: number(state.seed),
    numberResults: number(state.numberResults), outputFormat: state.outputFormat,
  };
  if (state.bitrate !== '' && ['MP3', 'OGG'].includes(state.outputFormat)) task.audioSettings = {bitrate: number(state.bitrate)};
  if (state.sourceAudio) {
    task.inputs = {audio: state.sourceAudio};
    settings.repaintingStart = number(state.repaintingStart);
    settings.repaintingEnd = number(state.repaintingEnd);
  } else {
    task.duration = number(state.duration);
  }
  task.settings = prune(settings);
  return prune(task);
}

function prune(obj) {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined));
}

// The form state a stored request describes (for "reuse settings" and history).
export function stateFromRequest(request, seed) {
  const s = request.settings || {};
  const blank = (v) => (v === undefined || v === null ? '' : String(v));
  return {
    model: blank(request.model), positivePrompt: blank(request.positivePrompt), lyrics: blank(s.lyrics),
    instrumental: !s.lyrics, duration: blank(request.duration), bpm: blank(s.bpm), keyScale: blank(s.keyScale),
    timeSignature: blank(s.timeSignature), vocalLanguage: s.vocalLanguage === 'unknown' ? '' : blank(s.vocalLanguage),
    steps: blank(request.steps), guidanceType: blank(s.guidanceType), CFGScale: blank(request.CFGScale),
    cfgIntervalStart: blank(s.cfgIntervalStart), cfgIntervalEnd: blank(s.cfgIntervalEnd),
    numberResults: blank(request.numberResults || 1), outputFormat: (request.outputFormat || 'MP3').toUpperCase(),
    bitrate: blank(request.audioSettings?.bitrate), negativePrompt: blank(request.negativePrompt),
    seed: blank(seed ?? request.seed), seedLock: true,
  };
}

// -- errors next to fields ----------------------------------------------------------------------

export function clearErrors() {
  for (const el of document.querySelectorAll('.field-error')) el.remove();
  for (const el of document.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  $('form-error').textContent = '';
}

// Show a Runware error next to each field its `parameter` names (a string or a list); one that
// names no field of the form goes under the form.
export function showError(error) {
  const params = [error.parameter].flat().filter(Boolean);
  const fields = params.map((p) => document.querySelector(`[data-param="${CSS.escape(p)}"]`)).filter(Boolean);
  if (!fields.length) { $('form-error').textContent = error.message; return; }
  for (const field of fields) {
    const target = field.type === 'hidden' ? $('source-name') : field;
    const note = document.createElement('p');
    note.className = 'error field-error';
    note.id = `${field.id}-error`;
    note.setAttribute('role', 'alert');
    note.dataset.code = error.code;
    note.textContent = error.message;
    target.setAttribute('aria-invalid', 'true');
    target.setAttribute('aria-describedby', note.id);
    target.closest('.field, fieldset').append(note);
    $('advanced').open ||= Boolean(field.closest('#advanced'));
  }
  fields[0].focus?.();
}

// -- repaint source -----------------------------------------------------------------------------

export function setSource(audio, duration) {
  $('sourceAudio').value = audio;
  $('repaintingStart').value = duration ? (duration / 4).toFixed(1) : '';
  $('repaintingEnd').value = duration ? (duration / 2).toFixed(1) : '';
  showSource();
  $('repaintingStart').focus();
}

function showSource() {
  const source = $('sourceAudio').value;
  $('source-panel').hidden = !source;
  $('source-name').textContent = source ? `Source: ${source}` : '';
  $('duration').disabled = Boolean(source);
}

// -- presets ------------------------------------------------------------------------------------

export function presets() {
  try { return JSON.parse(localStorage.getItem(PRESETS_KEY) || '{}'); } catch { return {}; }
}

export function savePresets(all) {
  localStorage.setItem(PRESETS_KEY, JSON.stringify(all));
  const list = $('preset-list');
  list.replaceChildren(...Object.keys(all).sort().map((name) => new Option(name, name)));
}
