// The committed src/protocol.ts is what `croupier schema` generates now: a server change to a message or a game's
// params or bets that was not followed by `npm run types` fails here.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { TYPES_FILE, generateProtocolTypes, readSchema } from "../scripts/protocol-types.mjs";

test("src/protocol.ts matches `croupier schema` (run `npm run types` after a schema change)", async () => {
  const committed = readFileSync(TYPES_FILE, "utf8");
  const fresh = await generateProtocolTypes();
  if (committed !== fresh) {
    const a = committed.split("\n");
    const b = fresh.split("\n");
    let line = 0;
    while (line < a.length && a[line] === b[line]) line++;
    assert.fail(
      `src/protocol.ts is stale: run \`npm run types\` in clients/js and commit the result.\n` +
        `first difference at line ${line + 1}:\n  committed: ${a[line] ?? "(end)"}\n  generated: ${b[line] ?? "(end)"}`,
    );
  }
});

test("the generated types cover every message and every game of the schema", () => {
  const schema = readSchema();
  const source = readFileSync(TYPES_FILE, "utf8");
  for (const name of Object.keys(schema.$defs)) {
    const typeName = name === "Error" ? "ErrorMessage" : name;
    assert.match(source, new RegExp(`export (interface|type) ${typeName}\\b`), `${typeName} is missing`);
  }
  for (const game of Object.keys(schema.properties.games.properties)) {
    assert.match(source, new RegExp(`\\n    ${game}: \\{`), `game ${game} is missing`);
  }
});
