// src/utils/commentsMigrationUtils: used by the comments merge only.
import { notUsed } from "./notcalled";

export const CommentsMigrator = notUsed("CommentsMigrator");
