// Node's `ws` running the echo script of tests/interop/conftest.py, for wschannel's client.
//
// Usage: node echo_server.mjs '{"closeCommand": "...", "closeCode": 4001, "closeReason": "...",
//                                "cert": "chain.pem", "key": "key.pem"}'
// (`cert` and `key`, optional: serve wss:// with Node's TLS, that certificate chain and key.)
//
// Listens on 127.0.0.1 (a free port), accepts permessage-deflate when offered, echoes every
// message, and answers the close command by closing with the given code and reason. It reports
// on stdout, one JSON object a line: {"event": "listening", "port"}, then per connection
// {"event": "open", "offered", "extensions"}, {"event": "message", "binary", "length",
// "sha256"} per message, and {"event": "close", "code", "reason"} with the close frame it
// received. It exits when its standard input ends.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:https";
import { WebSocketServer } from "ws";

const config = JSON.parse(process.argv[2]);

function report(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

let server;
if (config.cert) {
  const https = createServer({ cert: readFileSync(config.cert), key: readFileSync(config.key) });
  server = new WebSocketServer({ server: https, perMessageDeflate: true });
  https.listen(0, "127.0.0.1", () =>
    report({ event: "listening", port: https.address().port }),
  );
} else {
  server = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: true });
  server.on("listening", () => report({ event: "listening", port: server.address().port }));
}

server.on("connection", (ws, request) => {
  report({
    event: "open",
    offered: request.headers["sec-websocket-extensions"] ?? null,
    extensions: ws.extensions || null,
  });
  ws.on("message", (data, isBinary) => {
    const sha256 = createHash("sha256").update(data).digest("hex");
    report({ event: "message", binary: isBinary, length: data.length, sha256 });
    if (!isBinary && data.toString("utf8") === config.closeCommand) {
      ws.close(config.closeCode, config.closeReason);
    } else {
      ws.send(data, { binary: isBinary });
    }
  });
  ws.on("close", (code, reason) => {
    report({ event: "close", code, reason: reason.toString("utf8") });
  });
});

process.stdin.on("end", () => {
  server.close();
  for (const ws of server.clients) ws.terminate();
  process.exit(0);
});
process.stdin.resume();
