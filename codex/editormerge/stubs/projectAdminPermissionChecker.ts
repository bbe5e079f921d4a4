// src/utils/projectAdminPermissionChecker: used by the metadata.json merge only.
import { notCalled } from "./notcalled";

export const checkProjectAdminPermissions = notCalled("checkProjectAdminPermissions");
