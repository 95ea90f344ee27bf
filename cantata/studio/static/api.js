// The page's only way to the server: Runware tasks over WebSocket /v1, or HTTP POST /v1 while
// no socket can be had. Each call sends one task and resolves with its reply items
// ({data, errors}), routed by taskUUID exactly as a Runware SDK does.

export const uuid = () => crypto.randomUUID();

export class AuthError extends Error {}

// The code of the error a pending task gets when the socket closes under it (not a server's code).
export const CONNECTION_LOST = 'connectionLost';

// After a dropped socket (a server restart, a network blip) the client works over HTTP and opens a
// new socket in the background, waiting twice as long after each failure, up to REOPEN_MAX_MS.
const REOPEN_FIRST_MS = 500;
const REOPEN_MAX_MS = 8000;

export class RunwareClient {
  constructor(apiKey) {
    this.apiKey = apiKey;
    this.pending = new Map();   // taskUUID -> {resolve}
    this.socket = null;
    this.transport = 'none';
    this.onTransportChange = () => {};  // the page shows the transport; told on every change
  }

  // Open the socket and authenticate; a refused key rejects with AuthError, any other failure
  // leaves the client on HTTP.
  async connect() {
    try {
      this.useSocket(await this.openSocket());
    } catch (err) {
      if (err instanceof AuthError) throw err;
      this.transport = 'HTTP';
      const reply = await this.httpSend({taskType: 'ping', taskUUID: uuid()});
      if (reply.errors.some((e) => e.code === CONNECTION_LOST)) throw new Error(reply.errors[0].message);
      if (reply.errors.some((e) => e.parameter === 'apiKey')) throw new AuthError(reply.errors[0].message);
    }
  }

  openSocket() {
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1`;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.onerror = () => reject(new Error('socket failed'));
      ws.onclose = () => reject(new Error('socket closed'));
      ws.onopen = () => ws.send(JSON.stringify([{taskType: 'authentication', apiKey: this.apiKey || ''}]));
      ws.onmessage = (event) => {
        const frame = JSON.parse(event.data);
        if (frame.errors?.length) { ws.close(); reject(new AuthError(frame.errors[0].message)); return; }
        ws.onmessage = (e) => this.route(JSON.parse(e.data));
        resolve(ws);
      };
    });
  }

  useSocket(ws) {
    this.socket = ws;
    ws.onclose = () => {
      this.socket = null;
      this.setTransport('HTTP');
      this.failAll();
      this.reopen(REOPEN_FIRST_MS);
    };
    this.setTransport('WebSocket');
  }

  // Try a new socket after `delay` ms; a refused key (removed while we were away) stays on HTTP,
  // whose answers then say so.
  reopen(delay) {
    setTimeout(async () => {
      try {
        this.useSocket(await this.openSocket());
      } catch (err) {
        if (!(err instanceof AuthError)) this.reopen(Math.min(delay * 2, REOPEN_MAX_MS));
      }
    }, delay);
  }

  setTransport(transport) {
    this.transport = transport;
    this.onTransportChange(transport);
  }

  route(frame) {
    const items = [...(frame.data || []), ...(frame.errors || [])];
    const taskUUID = items.find((i) => i.taskUUID)?.taskUUID;
    const waiter = this.pending.get(taskUUID);
    if (!waiter) return;
    this.pending.delete(taskUUID);
    waiter.resolve({data: frame.data || [], errors: frame.errors || []});
  }

  failAll() {
    for (const [, waiter] of this.pending) waiter.resolve({data: [], errors: [{code: CONNECTION_LOST, message: 'The connection was lost.'}]});
    this.pending.clear();
  }

  // One task -> {data, errors}; never throws: a lost connection is an error item (CONNECTION_LOST).
  send(task) {
    if (!task.taskUUID) task.taskUUID = uuid();
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      return new Promise((resolve) => {
        this.pending.set(task.taskUUID, {resolve});
        this.socket.send(JSON.stringify([task]));
      });
    }
    return this.httpSend(task);
  }

  async httpSend(task) {
    const headers = {'Content-Type': 'application/json'};
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    let body;
    try {
      body = await (await fetch('/v1', {method: 'POST', headers, body: JSON.stringify([task])})).json();
    } catch {  // no answer, or not JSON (a proxy's error page): the server is out of reach for now
      return {data: [], errors: [{code: CONNECTION_LOST, message: 'The server cannot be reached.'}]};
    }
    return {data: body.data || [], errors: body.errors || []};
  }
}
