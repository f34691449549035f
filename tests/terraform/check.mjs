// Checks Terraform files with HashiCorp's own HCL code, compiled to WebAssembly (npm):
//  - @cdktf/hcl2json: hashicorp/hcl's native-syntax parser (through tmccombs/hcl2json) -> JSON;
//  - @cdktf/hcl-tools: hclwrite.Format, the formatter `terraform fmt` is built on (terraform fmt
//    also rewrites a few Terraform 0.11 idioms, such as "${var.x}" for var.x and quoted type
//    names, which the example does not use).
//
// Usage: node tests/terraform/check.mjs [FILE...]
// Without FILEs: every examples/terraform/*.tf and examples/terraform/*.tfvars.example.
// A file that does not parse, or whose text differs from its formatted text, is reported on
// stderr with its name, and the exit status is 1 (every file is checked first). Otherwise stdout
// gets one JSON object, {"files": {"<base name>": <hcl2json of that file>, ...}}, and the status
// is 0. Status 2: the checker cannot run (node_modules missing or not the locked versions).
// Run by tests/terraform_example.rs; tests/setup.sh installs node_modules (npm ci).

import { readFileSync, readdirSync, existsSync } from "node:fs";
import { basename, dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");
const exampleDir = join(repo, "examples", "terraform");

function fatal(message) {
  process.stderr.write(`check.mjs: ${message}\n`);
  process.exit(2);
}

// The installed packages must be the ones package.json pins (npm ci from the lock installs them).
const pinned = JSON.parse(readFileSync(join(here, "package.json"), "utf8")).dependencies;
for (const [name, version] of Object.entries(pinned)) {
  const manifest = join(here, "node_modules", name, "package.json");
  if (!existsSync(manifest)) {
    fatal(`${name} is not installed in ${relative(repo, here)}/node_modules: run tests/setup.sh`);
  }
  const installed = JSON.parse(readFileSync(manifest, "utf8")).version;
  if (installed !== version) {
    fatal(`${name} ${installed} is installed, package.json pins ${version}: run tests/setup.sh`);
  }
}
const require = createRequire(import.meta.url);
const { parse } = require("@cdktf/hcl2json");
const { format } = require("@cdktf/hcl-tools");

function defaultFiles() {
  return readdirSync(exampleDir)
    .filter((f) => f.endsWith(".tf") || f.endsWith(".tfvars.example"))
    .sort()
    .map((f) => join(exampleDir, f));
}

function show(path) {
  const rel = relative(repo, path);
  return rel.startsWith("..") ? path : rel;
}

// The first line where `got` and `want` differ, as a diff-ish hint.
function firstDifference(got, want) {
  const a = got.split("\n");
  const b = want.split("\n");
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] !== b[i]) {
      const line = (s) => (s === undefined ? "<end of file>" : JSON.stringify(s));
      return `  line ${i + 1}:\n  - ${line(a[i])}  (file)\n  + ${line(b[i])}  (formatted)`;
    }
  }
  return "  (no line differs: line endings or a final newline)";
}

const files = process.argv.length > 2 ? process.argv.slice(2).map((f) => resolve(f)) : defaultFiles();
if (files.length === 0) {
  fatal(`no files to check in ${show(exampleDir)}`);
}

const problems = [];
const out = {};
for (const path of files) {
  const name = basename(path);
  if (name in out) {
    fatal(`two files named ${name}`);
  }
  let text;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    problems.push(`${show(path)}: cannot read: ${e.message}`);
    continue;
  }
  let parsed;
  try {
    parsed = await parse(name, text);
  } catch (e) {
    problems.push(`${show(path)}: does not parse as HCL: ${e.message}`);
    continue;
  }
  const formatted = await format(text);
  if (formatted !== text) {
    problems.push(
      `${show(path)}: not formatted as terraform fmt would (hclwrite.Format); ` +
        `run terraform fmt on it. First difference:\n${firstDifference(text, formatted)}`,
    );
    continue;
  }
  out[name] = parsed;
}

if (problems.length > 0) {
  for (const p of problems) {
    process.stderr.write(`check.mjs: ${p}\n`);
  }
  process.exit(1);
}
process.stdout.write(JSON.stringify({ files: out }) + "\n");
