// src/utils/projectSwapManager: used by the metadata.json merge only.
import { notCalled } from "./notcalled";

export const normalizeProjectSwapInfo = notCalled("projectSwapManager.normalizeProjectSwapInfo");
