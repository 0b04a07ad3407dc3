// Parses an AsyncAPI document with the official parser: node asyncapi_parse.mjs NODE_MODULES FILE
// Prints {"ok", "errors", "warnings", "messages"} as JSON (see test_gateway_asyncapi_parser.py).
import { createRequire } from "module";
import { readFileSync } from "fs";

const require = createRequire(process.argv[2] + "/");
const { Parser } = require("@asyncapi/parser");
const { document, diagnostics } = await new Parser().parse(readFileSync(process.argv[3], "utf8"));
const describe = (d) => `${d.code}: ${d.message} @ ${d.path.join("/")}`;
const errors = diagnostics.filter((d) => d.severity === 0).map(describe);
console.log(
  JSON.stringify({
    ok: Boolean(document) && errors.length === 0,
    errors,
    warnings: diagnostics.filter((d) => d.severity === 1).map(describe),
    messages: document ? document.allMessages().all().map((m) => m.name()) : [],
  }),
);
