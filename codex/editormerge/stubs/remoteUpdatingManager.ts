// src/utils/remoteUpdatingManager: used by the metadata.json merge only.
import { notCalled } from "./notcalled";

export const isFeatureEnabled = notCalled("remoteUpdatingManager.isFeatureEnabled");
export const normalizeUpdateEntry = notCalled("remoteUpdatingManager.normalizeUpdateEntry");
