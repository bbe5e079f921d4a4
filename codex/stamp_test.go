package codex

import (
	"testing"
)

// stampsOf reads the stamps Apply gave a cell: its newest value edit and
// the createdAt, updatedAt and selectionTimestamp of take id.
func stampsOf(t *testing.T, c *Cell, id string) (text, created, updated, selection int64) {
	t.Helper()
	_, text, _ = c.lastValueEdit()
	a := c.Object().Path("metadata", "attachments", id)
	created, _ = a.Get("createdAt").Int64()
	updated, _ = a.Get("updatedAt").Int64()
	return text, created, updated, c.SelectionTimestamp()
}

// The stamp rule: 1 ms after what decides the field in the cell as read
// (the newest value edit, the selection), whatever that stamp's clock said,
// noHistoryStamp for a field with no history, the same on a re-apply to a
// newer version, and never the time of the read or of Apply.
func TestStampRule(t *testing.T) {
	const path = "files/target/GEN.codex"
	const ours = "audio-1770001200000-00000001"
	fast := readAt + 10*60_000 // a translator's clock ten minutes ahead
	cases := []struct {
		name             string
		prepare          func(c *Cell)
		wantText, wantAV int64
	}{
		{"no history", func(c *Cell) {}, noHistoryStamp, noHistoryStamp},
		{"edited and recorded", func(c *Cell) {
			userEdit(c, "<span>typed</span>", readAt-3_600_000)
			attach(c, take0(readAt-7_200_000))
		}, readAt - 3_600_000 + 1, readAt - 7_200_000 + 1},
		{"a clock ahead", func(c *Cell) {
			userEdit(c, "<span>typed</span>", fast)
			attach(c, take0(fast+1))
		}, fast + 1, fast + 2},
		{"other takes newer than the selection", func(c *Cell) {
			attach(c, take0(readAt-7_200_000))
			attach(c, take{id: "audio-late-deleted", created: readAt - 60_000, deleted: true})
			c.Object().Get("metadata").ensureArray("edits").Append(NewObject(
				Member{"editMap", NewArray(NewString("metadata"), NewString("cellLabel"))},
				Member{"value", NewString("label")}, Member{"timestamp", NewInt(readAt - 1000)},
				Member{"type", NewString("user-edit")}, Member{"author", NewString("x")}, Member{"validatedBy", NewArray()},
			))
		}, noHistoryStamp, readAt - 7_200_000 + 1},
		{"legacy edit", func(c *Cell) {
			c.Object().Get("metadata").ensureArray("edits").Append(NewObject(
				Member{"cellValue", NewString("old")}, Member{"timestamp", NewInt(readAt - 5000)},
				Member{"type", NewString("user-edit")}, Member{"author", NewString("x")},
			))
		}, readAt - 5000 + 1, noHistoryStamp},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			read := loadNotebook(t, "testdata/fixtures/GEN1to20_head.codex", path)
			tc.prepare(read.Cell("GEN 1:10"))
			read = mustParse(t, path, read.Marshal())
			patches := []Patch{
				{CellID: "GEN 1:10", Text: &TextChange{Value: "ours", Author: "gpu-worker"}, Audio: &AudioChange{ID: ours, Ext: "webm"}},
			}
			first := clone(t, read)
			// A retry: another cell changed, the version is read again and
			// the patches are applied to it against the same base.
			moved := clone(t, read)
			userEdit(moved.Cell("GEN 1:20"), "<span>elsewhere</span>", readAt+60_000)
			moved = mustParse(t, path, moved.Marshal())
			for name, nb := range map[string]*Notebook{"first": first, "retry": moved} {
				if n, s := Apply(nb, read, patches); n != 1 || len(s) != 0 {
					t.Fatalf("%s: applied %d, skipped %+v", name, n, s)
				}
				text, created, updated, sel := stampsOf(t, nb.Cell("GEN 1:10"), ours)
				if text != tc.wantText || created != tc.wantAV || updated != tc.wantAV || sel != tc.wantAV {
					t.Errorf("%s: text %d, take %d/%d, selection %d; want text %d, take and selection %d",
						name, text, created, updated, sel, tc.wantText, tc.wantAV)
				}
				if nb.Cell("GEN 1:10").Value() != "ours" || nb.Cell("GEN 1:10").SelectedAudioID() != ours {
					t.Errorf("%s: ours not shown", name)
				}
			}
			// Without a base the cell as it is gives the stamps.
			alone := clone(t, read)
			Apply(alone, nil, patches)
			if text, _, _, sel := stampsOf(t, alone.Cell("GEN 1:10"), ours); text != tc.wantText || sel != tc.wantAV {
				t.Errorf("no base: text %d, selection %d", text, sel)
			}
		})
	}
}

// take0 is a selected human take created at ts.
func take0(ts int64) take {
	return take{id: "audio-human-0001", created: ts, selected: true}
}
