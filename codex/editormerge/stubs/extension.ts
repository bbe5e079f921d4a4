// src/extension: the editor's entry point. The merge asks it for the user
// name only when CODEX_MERGE_USER is unset; the driver sets it.
import { notCalled } from "./notcalled";

export const getAuthApi = notCalled("extension.getAuthApi");
