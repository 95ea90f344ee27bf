// Drive Runware's JavaScript SDK (npm `@runware/sdk-js`, the older JS SDK) against a server.
//
//   node sdk_js_run.mjs <path of @runware/sdk-js's dist/index.js>   < spec.json
//
// Spec (stdin): {"ws_url": "ws://host:port/v1", "api_key": "...",
//                "calls": [{"name": "...", "request": {... runware.audioInference(...) payload ...}}]}
// Prints {call name: outcome} as JSON: {"ok": true, "results": [...], "seconds": s} or
// {"ok": false, "error": {...what the SDK rejected with...}, "seconds": s}, plus a "connect"
// outcome for opening and authenticating the connection (the calls only run when it succeeds).
//
// Under Node the package's `Runware` is its `RunwareServer` (a `ws` WebSocket). The SDK waits
// for results with a `timeoutDuration` budget (60 s by default) and then resubmits; the budget
// is raised here so a slow CPU test machine cannot turn a late result into a retry.

import { pathToFileURL } from "node:url";

const sdkPath = process.argv[2];
const { Runware } = await import(pathToFileURL(sdkPath).href);

let input = "";
for await (const chunk of process.stdin) input += chunk;
const spec = JSON.parse(input);

const describe = (err) => (err instanceof Error ? { message: err.message, name: err.name } : err);
const outcomes = {};

// Connecting authenticates; a refused key is reported as the "connect" outcome.
const runware = new Runware({ apiKey: spec.api_key, url: spec.ws_url, timeoutDuration: 600_000 });
const connectStarted = Date.now();
try {
  await runware.ensureConnection();
  outcomes.connect = { ok: true, seconds: (Date.now() - connectStarted) / 1000 };
} catch (err) {
  outcomes.connect = { ok: false, error: describe(err), seconds: (Date.now() - connectStarted) / 1000 };
  process.stdout.write(JSON.stringify(outcomes));
  process.exit(0);
}

await Promise.all(spec.calls.map(async (call) => {
  const started = Date.now();
  try {
    const results = await runware.audioInference(call.request);
    outcomes[call.name] = { ok: true, results, seconds: (Date.now() - started) / 1000 };
  } catch (err) {
    outcomes[call.name] = { ok: false, error: describe(err), seconds: (Date.now() - started) / 1000 };
  }
}));

process.stdout.write(JSON.stringify(outcomes));
await runware.disconnect();
process.exit(0);
