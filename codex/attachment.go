package codex

// Attachment is one entry of metadata.attachments.
type Attachment struct {
	ID        string
	URL       string
	Type      string
	CreatedAt int64
	UpdatedAt int64
	IsDeleted bool
	// IsMissing is the editor's hint that the file was not found locally;
	// the editor still plays such a take, but a job cannot fetch it.
	IsMissing bool
	// IsGenerated marks synthetic audio (text-to-speech).
	IsGenerated bool
	// Validated: at least one person's validation of the take is active.
	Validated bool
}

// Attachments lists metadata.attachments in order.
func (c *Cell) Attachments() []Attachment {
	var out []Attachment
	for _, m := range c.meta().Get("attachments").Members() {
		if a, ok := attachmentOf(m); ok {
			out = append(out, a)
		}
	}
	return out
}

func attachmentOf(m Member) (Attachment, bool) {
	a := m.Value
	if a.Kind() != Object {
		return Attachment{}, false
	}
	url, _ := a.Get("url").Str()
	typ, _ := a.Get("type").Str()
	created, _ := a.Get("createdAt").Int64()
	updated, _ := a.Get("updatedAt").Int64()
	return Attachment{
		ID: m.Key, URL: url, Type: typ, CreatedAt: created, UpdatedAt: updated,
		IsDeleted: a.Get("isDeleted").Truthy(), IsMissing: a.Get("isMissing").Truthy(),
		IsGenerated: a.Get("isGenerated").Truthy(), Validated: hasActiveValidation(a.Get("validatedBy")),
	}, true
}

// playable is what the editor counts as a take of the cell: audio that was
// not deleted. isMissing does not count: the editor treats it as a stale
// hint and plays the take anyway.
func (a Attachment) playable() bool { return a.Type == "audio" && !a.IsDeleted }

// fetchable is a take a job can download.
func (a Attachment) fetchable() bool { return a.playable() && !a.IsMissing && a.URL != "" }

// Human reports a take recorded by a person, or a generated one a person
// validated.
func (a Attachment) Human() bool { return !a.IsGenerated || a.Validated }

// newer orders takes as the editor's fallback does: by createdAt, then
// updatedAt.
func (a Attachment) newer(b Attachment) bool {
	if a.CreatedAt != b.CreatedAt {
		return a.CreatedAt > b.CreatedAt
	}
	return a.UpdatedAt > b.UpdatedAt
}

// SelectedAudioID is metadata.selectedAudioId.
func (c *Cell) SelectedAudioID() string { return c.metaString("selectedAudioId") }

// SelectionTimestamp is metadata.selectionTimestamp (ms), 0 when absent.
func (c *Cell) SelectionTimestamp() int64 {
	n, _ := c.meta().Get("selectionTimestamp").Int64()
	return n
}

// pickAudio returns the selected take when ok accepts it, else the newest
// take ok accepts.
func (c *Cell) pickAudio(ok func(Attachment) bool) (Attachment, bool) {
	atts := c.meta().Get("attachments").Members()
	if sel := c.SelectedAudioID(); sel != "" {
		for i := len(atts) - 1; i >= 0; i-- { // the last duplicate key wins, as in JSON.parse
			if atts[i].Key != sel {
				continue
			}
			if a, valid := attachmentOf(atts[i]); valid && ok(a) {
				return a, true
			}
			break
		}
	}
	var best Attachment
	found := false
	for _, m := range atts {
		if a, valid := attachmentOf(m); valid && ok(a) && (!found || a.newer(best)) {
			best, found = a, true
		}
	}
	return best, found
}

// CurrentAudio returns the take the editor plays: the selected one when it
// is an audio attachment that was not deleted, else the newest such take by
// createdAt. A take marked isMissing still counts. A cell with a current
// take does not need audio.
func (c *Cell) CurrentAudio() (Attachment, bool) { return c.pickAudio(Attachment.playable) }

// Audio returns the recording a job can fetch: the current take when it is
// fetchable (not missing, with a url), else the newest fetchable take.
func (c *Cell) Audio() (Attachment, bool) {
	if a, ok := c.CurrentAudio(); ok && a.fetchable() {
		return a, true
	}
	return c.pickAudio(Attachment.fetchable)
}
