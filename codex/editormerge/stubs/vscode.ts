// The part of the vscode API the .codex merge path uses (Uri, workspace.fs
// read and write, window.showErrorMessage), over node's fs. Everything else
// throws.
import * as fs from "fs";
import * as path from "path";
import { notCalled, notUsed } from "./notcalled";

export class Uri {
    private constructor(readonly fsPath: string) {}
    static file(p: string): Uri {
        return new Uri(path.resolve(p));
    }
    static joinPath(base: Uri, ...segments: string[]): Uri {
        return new Uri(path.join(base.fsPath, ...segments));
    }
    get path(): string {
        return this.fsPath;
    }
    toString(): string {
        return "file://" + this.fsPath;
    }
}

// Errors the merge reported to the user; the driver fails on any.
export const shownErrors: string[] = [];

export const workspace = {
    fs: {
        async readFile(uri: Uri): Promise<Uint8Array> {
            return fs.promises.readFile(uri.fsPath);
        },
        async writeFile(uri: Uri, content: Uint8Array): Promise<void> {
            await fs.promises.mkdir(path.dirname(uri.fsPath), { recursive: true });
            await fs.promises.writeFile(uri.fsPath, content);
        },
        stat: notCalled("vscode.workspace.fs.stat"),
        delete: notCalled("vscode.workspace.fs.delete"),
        createDirectory: notCalled("vscode.workspace.fs.createDirectory"),
    },
    get workspaceFolders(): never {
        return notCalled("vscode.workspace.workspaceFolders")();
    },
    findFiles: notCalled("vscode.workspace.findFiles"),
    openTextDocument: notCalled("vscode.workspace.openTextDocument"),
    getConfiguration: notCalled("vscode.workspace.getConfiguration"),
};

export const window = {
    showErrorMessage(message: string): Promise<undefined> {
        shownErrors.push(message);
        return Promise.resolve(undefined);
    },
    showWarningMessage: notCalled("vscode.window.showWarningMessage"),
    showInformationMessage: notCalled("vscode.window.showInformationMessage"),
    withProgress: notCalled("vscode.window.withProgress"),
};

export const commands = notUsed("vscode.commands");
export const ProgressLocation = notUsed("vscode.ProgressLocation");
export const RelativePattern = notCalled("vscode.RelativePattern");
