// src/projectManager/utils/merge/fileDeletionGuard (not in the vendored copy):
// deleted-file tombstones, consulted when a whole sync resolves its files,
// not by a notebook merge.
import { notCalled } from "./notcalled";

export type DeletionTombstone = never;
export const collectDeletionTombstones = notCalled("fileDeletionGuard.collectDeletionTombstones");
export const findTombstoneTimestamp = notCalled("fileDeletionGuard.findTombstoneTimestamp");
export const getLatestContentTimestamp = notCalled("fileDeletionGuard.getLatestContentTimestamp");
export const isTrackedContentFile = notCalled("fileDeletionGuard.isTrackedContentFile");
export const readMetadataContent = notCalled("fileDeletionGuard.readMetadataContent");
