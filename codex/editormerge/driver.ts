// Command-line driver of the Codex editor's notebook merge: the code a
// translator's editor runs when its sync meets two versions of a notebook
// (resolveConflictFile in third_party/codex-editor). It reads one merge per
// line of standard input, as JSON:
//
//   {"path": "files/target/GEN.codex", "local": FILE, "server": FILE, "base": FILE, "out": FILE}
//
// "local" is the editor's "ours" (the copy on the translator's machine),
// "server" its "theirs" (what the sync fetched), "base" their common
// ancestor (optional). The merged notebook is written to "out", and one
// JSON line per merge is printed: {"ok": true} or {"error": "..."}. The
// exit status is 1 when any merge failed.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as readline from "readline";
import { resolveConflictFile } from "../../third_party/codex-editor/src/projectManager/utils/merge/resolvers";
import { determineStrategy } from "../../third_party/codex-editor/src/projectManager/utils/merge/strategies";
import { ConflictResolutionStrategy } from "../../third_party/codex-editor/src/projectManager/utils/merge/types";
import { calls } from "./stubs/notcalled";
import { shownErrors } from "./stubs/vscode";

interface Request {
    path: string;
    local: string;
    server: string;
    base?: string;
    out: string;
}

// The editor's logging goes to stderr: stdout carries the results.
console.log = (...args: unknown[]) => console.error(...args);
// The merge asks the extension for the user's name unless this is set.
process.env.CODEX_MERGE_USER = process.env.CODEX_MERGE_USER || "editor-merge-driver";

async function mergeOne(req: Request, workspace: string): Promise<void> {
    if (determineStrategy(req.path) !== ConflictResolutionStrategy.CODEX_CUSTOM_MERGE) {
        throw new Error(`${req.path} is not merged as a notebook by the editor`);
    }
    const errorsBefore = shownErrors.length;
    const callsBefore = calls.length;
    const conflict = {
        filepath: req.path,
        ours: fs.readFileSync(req.local, "utf8"),
        theirs: fs.readFileSync(req.server, "utf8"),
        base: req.base ? fs.readFileSync(req.base, "utf8") : "",
        isDeleted: false,
        isNew: false,
    };
    const written = await resolveConflictFile(conflict, workspace, { refreshOursFromDisk: false });
    if (calls.length > callsBefore) {
        throw new Error(`the merge reached code outside the .codex path: ${calls.slice(callsBefore).join(", ")}`);
    }
    if (written !== req.path || shownErrors.length > errorsBefore) {
        throw new Error(`the editor failed to merge: ${shownErrors.slice(errorsBefore).join("; ") || "no file written"}`);
    }
    fs.mkdirSync(path.dirname(req.out), { recursive: true });
    fs.renameSync(path.join(workspace, req.path), req.out);
}

async function main(): Promise<number> {
    const workspace = fs.mkdtempSync(path.join(os.tmpdir(), "editor-merge-"));
    let failed = 0;
    try {
        const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
        for await (const line of lines) {
            if (line.trim() === "") {
                continue;
            }
            try {
                await mergeOne(JSON.parse(line) as Request, workspace);
                process.stdout.write(JSON.stringify({ ok: true }) + "\n");
            } catch (e) {
                failed++;
                process.stdout.write(JSON.stringify({ error: String((e as Error)?.message ?? e) }) + "\n");
            }
        }
    } finally {
        fs.rmSync(workspace, { recursive: true, force: true });
    }
    return failed > 0 ? 1 : 0;
}

main().then(
    (code) => process.exit(code),
    (e) => {
        console.error(e);
        process.exit(2);
    }
);
