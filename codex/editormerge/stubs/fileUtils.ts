// src/utils/fileUtils: used when a whole sync resolves its files, not by a
// notebook merge.
import { notUsed } from "./notcalled";

export const ORPHANED_PROJECT_FILES = notUsed("fileUtils.ORPHANED_PROJECT_FILES");
