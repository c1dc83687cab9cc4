'use strict';
// The interop scenario's client, built on the npm package soupbintcp@1.0.2.
//
// Run with NODE_PATH pointing at the node_modules of the harness's npm install
// (tests/peers/__init__.py does). The scenario is written down there; this prints its
// one-line JSON result on stdout.
//
// Usage: node npm_client.js HOST PORT [--echo-sequenced] [--skip-echo] [--timeout SECONDS]
// --skip-echo: leave out step 2 (for servers whose only sequenced answer is a stream message).
//
// Facts about the package this relies on: its Client emits 'error' on an Unsequenced Data packet
// from the server (so this client always expects the echo as Sequenced Data: run the server with
// --echo-sequenced; the flag is accepted here for symmetry), it does not trim field padding (we
// do), its logout() only sends 'O' (we then wait for the server to close), and its Connection
// sends a heartbeat every 1 s.

const soupbintcp = require('soupbintcp');

const SESSION = 'INTEROP';
const USER = 'user';
const PASSWORD = 'pass';
const MESSAGE_COUNT = 100;
const RESUME_FROM = 51;

class ScenarioError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ScenarioError';
  }
}

function parseArgs(argv) {
  const args = { host: null, port: null, echoSequenced: false, skipEcho: false, timeout: 20 };
  const positional = [];
  for (let i = 0; i < argv.length; i++) {
    switch (argv[i]) {
      case '--echo-sequenced': args.echoSequenced = true; break;
      case '--skip-echo': args.skipEcho = true; break;
      case '--timeout': args.timeout = Number(argv[++i]); break;
      default: positional.push(argv[i]);
    }
  }
  if (positional.length !== 2) {
    process.stderr.write('usage: npm_client.js HOST PORT [--echo-sequenced] [--timeout SECONDS]\n');
    process.exit(2);
  }
  [args.host, args.port] = [positional[0], Number(positional[1])];
  return args;
}

function log(message) {
  process.stderr.write(`${new Date().toISOString()} npm_client ${message}\n`);
}

// What the client's events tell us, in order, for the scenario to await one by one.
class Inbox {
  constructor() {
    this.items = [];
    this.waiter = null;
  }

  push(item) {
    if (this.waiter) {
      const waiter = this.waiter;
      this.waiter = null;
      waiter(item);
    } else {
      this.items.push(item);
    }
  }

  next(timeoutMillis, what) {
    if (this.items.length) return Promise.resolve(this.items.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new ScenarioError(`timed out waiting for ${what}`));
      }, Math.max(timeoutMillis, 1));
      this.waiter = (item) => {
        clearTimeout(timer);
        resolve(item);
      };
    });
  }
}

class Connection {
  constructor(host, port, deadline) {
    this.deadline = deadline;
    this.inbox = new Inbox();
    this.closed = false;
    this.host = host;
    this.port = port;
  }

  remaining() {
    return this.deadline - Date.now();
  }

  open() {
    return new Promise((resolve, reject) => {
      let connected = false;
      this.client = new soupbintcp.Client({ host: this.host, port: this.port }, () => {
        connected = true;
        resolve();
      });
      this.client.on('accept', (p) => this.inbox.push({ type: 'A', session: p.session, sequence: p.sequenceNumber }));
      this.client.on('reject', (p) => this.inbox.push({ type: 'J', reason: p.rejectReasonCode }));
      this.client.on('message', (p) => this.inbox.push({ type: 'S', data: p.toString('latin1') }));
      this.client.on('ending', () => this.inbox.push({ type: 'Z' }));
      this.client.on('end', () => {
        this.closed = true;
        this.inbox.push({ type: 'closed' });
      });
      this.client.on('error', (err) => {
        if (!connected) {
          reject(err);
          return;
        }
        this.inbox.push({ type: 'error', error: err.message });
      });
    });
  }

  async next(what) {
    const item = await this.inbox.next(this.remaining(), what);
    if (item.type === 'closed') throw new ScenarioError(`connection closed while waiting for ${what}`);
    if (item.type === 'error') throw new ScenarioError(`client error while waiting for ${what}: ${item.error}`);
    return item;
  }

  async login(password, sequence) {
    await this.open();
    this.client.login({ username: USER, password, requestedSession: '', requestedSequenceNumber: sequence });
    return this.next('the login reply');
  }

  async receiveSequenced(first, last) {
    const payloads = [];
    for (let sequence = first; sequence <= last; sequence++) {
      const item = await this.next(`Sequenced Data ${sequence}`);
      if (item.type !== 'S') throw new ScenarioError(`expected Sequenced Data ${sequence}, got ${JSON.stringify(item)}`);
      if (item.data !== `msg-${sequence}`) {
        throw new ScenarioError(`Sequenced Data ${sequence} is ${JSON.stringify(item.data)}, expected "msg-${sequence}"`);
      }
      payloads.push(item.data);
    }
    return payloads;
  }

  // The npm logout only sends 'O'; the scenario's server closes the connection on it.
  async logout() {
    this.client.logout();
    try {
      while (!this.closed) {
        const item = await this.inbox.next(this.remaining(), 'the server to close after logout');
        if (item.type === 'S') throw new ScenarioError(`unexpected Sequenced Data after logout: ${JSON.stringify(item.data)}`);
        if (item.type === 'error') throw new ScenarioError(`client error after logout: ${item.error}`);
      }
    } finally {
      this.end();
    }
  }

  end() {
    if (this.client) this.client.end();
  }
}

async function scenario(args, result) {
  const deadline = Date.now() + args.timeout * 1000;
  const connections = [];
  const connect = () => {
    const connection = new Connection(args.host, args.port, deadline);
    connections.push(connection);
    return connection;
  };
  try {
    const first = connect();
    let reply = await first.login(PASSWORD, 1);
    if (reply.type !== 'A') throw new ScenarioError(`first login: expected Login Accepted, got ${JSON.stringify(reply)}`);
    result.first_login = { session: reply.session.trim(), sequence: reply.sequence };
    result.messages = await first.receiveSequenced(1, MESSAGE_COUNT);
    if (!args.skipEcho) {
      first.client.send(Buffer.from('ping', 'ascii'));
      const echo = await first.next("the echo of 'ping'");
      if (echo.type !== 'S') throw new ScenarioError(`expected the echo as Sequenced Data, got ${JSON.stringify(echo)}`);
      result.echo = echo.data;
    }
    await first.logout();

    const resume = connect();
    reply = await resume.login(PASSWORD, RESUME_FROM);
    if (reply.type !== 'A') throw new ScenarioError(`resume login: expected Login Accepted, got ${JSON.stringify(reply)}`);
    result.resume = { sequence: reply.sequence, messages: [] };
    result.resume.messages = await resume.receiveSequenced(RESUME_FROM, MESSAGE_COUNT);
    await resume.logout();

    const bad = connect();
    reply = await bad.login('wrong', 1);
    if (reply.type !== 'J') throw new ScenarioError(`bad login: expected Login Rejected, got ${JSON.stringify(reply)}`);
    result.bad_login = reply.reason;
  } finally {
    for (const connection of connections) connection.end();
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const result = {};
  let exitCode = 0;
  try {
    await scenario(args, result);
  } catch (err) {
    log(`scenario failed: ${err.stack || err}`);
    result.error = `${err.name}: ${err.message}`;
    exitCode = 1;
  }
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(exitCode));
}

main();
