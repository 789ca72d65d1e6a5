// Runs tests/browser/suite.py under Pyodide in Node (20+, with --experimental-websocket), the
// way page.html does in Chromium. Reads JSON lines on stdin:
//   first  {"files": {"<path in Pyodide>": "<path on disk>", ...}}: written into Pyodide's
//          filesystem, then the suite is imported and {"ready": "<Pyodide version>"} printed;
//   then   {"name": "<check>", "config": {...}} each: the check runs and its outcome is printed.
// Every answer is one line prefixed with "@@wschannel " (Python's own output may interleave).
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { loadPyodide } from "pyodide";

const ROOT = "/wschannel-tests";
const PREFIX = "@@wschannel ";

function answer(value) {
  process.stdout.write(PREFIX + JSON.stringify(value) + "\n");
}

if (typeof WebSocket === "undefined") {
  answer({ error: "no global WebSocket: run node with --experimental-websocket" });
  process.exit(1);
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
let pyodide = null;
let suite = null;
for await (const line of lines) {
  const request = JSON.parse(line);
  if (request.files) {
    pyodide = await loadPyodide();
    for (const [target, source] of Object.entries(request.files)) {
      const path = `${ROOT}/${target}`;
      pyodide.FS.mkdirTree(path.slice(0, path.lastIndexOf("/")));
      pyodide.FS.writeFile(path, readFileSync(source));
    }
    pyodide.runPython(`import sys; sys.path.insert(0, ${JSON.stringify(ROOT)})`);
    suite = pyodide.pyimport("browser_suite");
    answer({ ready: pyodide.version });
  } else {
    const result = await suite.run(request.name, JSON.stringify(request.config));
    answer(JSON.parse(result));
  }
}
process.exit(0);
