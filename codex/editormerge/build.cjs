// Bundles driver.ts with the editor's merge code into one file node runs:
//   NODE_PATH=<node_modules with esbuild> node build.cjs OUT
// Imports of the editor's code resolve to third_party/codex-editor; the
// modules the .codex merge path never calls, and vscode, resolve to stubs/.
// An import that is neither fails the build, so nothing else slips in.
const path = require("path");
const esbuild = require("esbuild");

const here = __dirname;
const vendored = path.resolve(here, "../../third_party/codex-editor");

// Paths inside the vendored tree (without extension) served by a stub.
const stubbed = {
    "src/extension": "extension.ts",
    "src/utils/projectAdminPermissionChecker": "projectAdminPermissionChecker.ts",
    "src/utils/remoteUpdatingManager": "remoteUpdatingManager.ts",
    "src/utils/projectSwapManager": "projectSwapManager.ts",
    "src/utils/commentsMigrationUtils": "commentsMigrationUtils.ts",
    "src/utils/fileUtils": "fileUtils.ts",
    "src/projectManager/utils/merge/fileDeletionGuard": "fileDeletionGuard.ts",
};

const stubs = {
    name: "codex-editor-stubs",
    setup(build) {
        build.onResolve({ filter: /^vscode$/ }, () => ({ path: path.join(here, "stubs", "vscode.ts") }));
        // The editor's "@/..." alias is its src/ folder.
        build.onResolve({ filter: /^@\// }, (args) =>
            build.resolve("./" + args.path.slice(2), { resolveDir: path.join(vendored, "src"), kind: args.kind })
        );
        build.onResolve({ filter: /^\./ }, (args) => {
            const rel = path.relative(vendored, path.resolve(args.resolveDir, args.path)).split(path.sep).join("/");
            const stub = stubbed[rel];
            return stub ? { path: path.join(here, "stubs", stub) } : undefined;
        });
    },
};

const out = process.argv[2];
if (!out) {
    console.error("usage: node build.cjs OUT");
    process.exit(2);
}
esbuild
    .build({
        entryPoints: [path.join(here, "driver.ts")],
        bundle: true,
        platform: "node",
        target: "node18",
        format: "cjs",
        outfile: out,
        plugins: [stubs],
        logLevel: "warning",
    })
    .catch(() => process.exit(1));
