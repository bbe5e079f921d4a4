package codex

// The stamp rule. The editor's merge decides what a cell shows by time
// stamps alone: its value comes from the newest value edit, its take from
// the newer selectionTimestamp. A job's change is stamped just above what
// decided that field in the cell as the job read it:
//
//   - a text edit 1 ms after the newest value edit of the cell;
//   - a new take's createdAt, updatedAt and the selectionTimestamp 1 ms
//     after the cell's selectionTimestamp.
//
// So the change shows over everything the job saw, even over a stamp from a
// clock that runs ahead, and the stamp is no higher than that needs: a
// person's change the job did not see — made before or after the read, on
// any clock — shows wherever it would have shown against the version the
// job read, in either direction of the editor's sync. The stamps come from
// the version read, never from a clock, and are the same on every re-apply
// of the patches.
//
// A field with no history (a verse never typed, a verse never recorded)
// gets noHistoryStamp, just after the Unix epoch: any change a person
// makes to it is newer, whatever their clock says, while the job's change
// still shows over the nothing it replaces. Its cost is a 1970 date on the
// machine's edit or take in the editor's history.

// noHistoryStamp (ms) stamps a change to a field with no history: the first
// stamp that leaves room for an initial-import edit initialImportLead
// before it at a positive time.
const noHistoryStamp = initialImportLead + 1

// textStamp is the stamp of a machine text edit of a cell read as read.
func textStamp(read *Cell) int64 {
	newest, ok := int64(0), false
	for _, e := range read.meta().Get("edits").Elems() {
		if !isValueEdit(e) && !isLegacyValueEdit(e) {
			continue
		}
		if ts, valid := e.Get("timestamp").Int64(); valid && (!ok || ts > newest) {
			newest, ok = ts, true
		}
	}
	return after(newest, ok)
}

// isLegacyValueEdit is an edit of the editor's first format (cellValue, no
// editMap), which its merge turns into a value edit.
func isLegacyValueEdit(e *Value) bool {
	return e.Get("editMap") == nil && e.Get("cellValue") != nil
}

// audioStamp is the createdAt, updatedAt and selectionTimestamp of a new
// take of a cell read as read. Other takes' times do not count: the editor
// plays the selected take, so only the selection decides.
func audioStamp(read *Cell) int64 {
	ts, ok := read.meta().Get("selectionTimestamp").Int64()
	return after(ts, ok)
}

func after(newest int64, ok bool) int64 {
	if !ok {
		return noHistoryStamp
	}
	return newest + 1
}
