// npm run types: regenerate src/protocol.ts from `croupier schema`.
// npm run types:check: exit 1 when the committed file differs from what the schema generates now.
import { readFileSync, writeFileSync } from "node:fs";
import { relative } from "node:path";
import { TYPES_FILE, generateProtocolTypes } from "./protocol-types.mjs";

const fresh = await generateProtocolTypes();
const name = relative(process.cwd(), TYPES_FILE);
if (process.argv.includes("--check")) {
  let current = "";
  try {
    current = readFileSync(TYPES_FILE, "utf8");
  } catch {}
  if (current !== fresh) {
    console.error(`${name} is stale: the server's schema changed. Run \`npm run types\` and commit it.`);
    process.exit(1);
  }
  console.log(`${name} matches \`croupier schema\``);
} else {
  writeFileSync(TYPES_FILE, fresh);
  console.log(`wrote ${name}`);
}
