'use strict';
// The interop scenario's server, built on the npm package soupbintcp@1.0.2.
//
// Run with NODE_PATH pointing at the node_modules of the harness's npm install
// (tests/peers/__init__.py does). The scenario is written down there.
//
// Usage: node npm_server.js [--host H] [--port P] [--echo-sequenced] [--exit-on-stdin-eof]
// Prints the bound port as the first stdout line; logs to stderr.
//
// Facts about the package this relies on: it does not trim field padding (we do); its Session
// has no way to send Unsequenced Data, so the U echo goes through its connection's send(); its
// Connection sends heartbeats every 1 s and reports a 15 s receive timeout as an 'error'.

const soupbintcp = require('soupbintcp');
const packet = require('soupbintcp/lib/packet');

const SESSION = 'INTEROP';
const USER = 'user';
const PASSWORD = 'pass';
const MESSAGE_COUNT = 100;

function parseArgs(argv) {
  const args = { host: '127.0.0.1', port: 0, echoSequenced: false, exitOnStdinEof: false };
  for (let i = 0; i < argv.length; i++) {
    switch (argv[i]) {
      case '--host': args.host = argv[++i]; break;
      case '--port': args.port = Number(argv[++i]); break;
      case '--echo-sequenced': args.echoSequenced = true; break;
      case '--exit-on-stdin-eof': args.exitOnStdinEof = true; break;
      default:
        process.stderr.write(`npm_server: unknown argument ${argv[i]}\n`);
        process.exit(2);
    }
  }
  return args;
}

function log(message) {
  process.stderr.write(`${new Date().toISOString()} npm_server ${message}\n`);
}

const args = parseArgs(process.argv.slice(2));
let nextConnection = 1;

const server = new soupbintcp.Server({ host: args.host, port: args.port }, () => {
  process.stdout.write(`${server.address().port}\n`);
  log(`soupbintcp serving on ${args.host}:${server.address().port}`);
});

server.on('session', (session) => {
  const id = nextConnection++;
  let loggedIn = false;
  let closed = false;

  const close = (why) => {
    if (closed) return;
    closed = true;
    log(`#${id} closing: ${why}`);
    session.end();
  };

  session.on('login', (request) => {
    const user = request.username.trim();
    const password = request.password.trim();
    const requestedSession = request.requestedSession.trim();
    const requested = request.requestedSequenceNumber;
    log(`#${id} login request ${JSON.stringify(user)} session ${JSON.stringify(requestedSession)} sequence ${requested}`);
    if (loggedIn) {
      close('second login request');
      return;
    }
    if (user !== USER || password !== PASSWORD) {
      session.reject({ rejectReasonCode: 'A' });
      close('rejected: not authorized');
      return;
    }
    if (requestedSession !== '' && requestedSession !== SESSION) {
      session.reject({ rejectReasonCode: 'S' });
      close('rejected: session not available');
      return;
    }
    if (!Number.isInteger(requested) || requested < 0) {
      close(`invalid requested sequence number ${requested}`);
      return;
    }
    const start = requested >= 1 && requested <= MESSAGE_COUNT + 1 ? requested : MESSAGE_COUNT + 1;
    loggedIn = true;
    session.accept({ session: SESSION, sequenceNumber: start });
    for (let sequence = start; sequence <= MESSAGE_COUNT; sequence++) {
      session.send(Buffer.from(`msg-${sequence}`, 'ascii'));
    }
    log(`#${id} sent messages ${start}..${MESSAGE_COUNT}`);
  });

  session.on('message', (payload) => {
    if (!loggedIn) {
      close('unsequenced data before login');
      return;
    }
    const echo = Buffer.concat([Buffer.from('echo:', 'ascii'), payload]);
    log(`#${id} unsequenced ${JSON.stringify(payload.toString('latin1'))}, echoing as ${args.echoSequenced ? 'S' : 'U'}`);
    if (args.echoSequenced) {
      session.send(echo);
    } else {
      session._connection.send(packet.UNSEQUENCED_DATA, echo);
    }
  });

  session.on('logout', () => close('logout request'));
  session.on('error', (err) => close(`error: ${err.message}`));
  session.on('end', () => {
    log(`#${id} peer closed`);
    close('peer closed');
  });
});

server.on('error', (err) => {
  log(`server error: ${err.stack || err}`);
  process.exit(1);
});

if (args.exitOnStdinEof) {
  process.stdin.on('end', () => {
    log('stdin closed, exiting');
    process.exit(0);
  });
  process.stdin.resume();
}
