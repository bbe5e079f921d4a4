package audio

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEncodeEachFormatProbeAgrees(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	src := filepath.Join(dir, "clean.wav")
	srcDur, err := Clean(ctx, speechWAV(t, dir), src, CleanOptions{SampleRate: 22050, Trim: true, Normalize: true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		mime     string
		rate     int
		kbpsLow  int
		kbpsHigh int
	}{
		"wav":  {"audio/wav", 22050, 352, 354}, // 22050 Hz × 16 bit
		"ogg":  {"audio/ogg", 22050, 20, 120},
		"mp3":  {"audio/mpeg", 22050, 56, 72},
		"webm": {"audio/webm", 48000, 35, 70},
	}
	for _, format := range Formats() {
		t.Run(format, func(t *testing.T) {
			w := want[format]
			dst := filepath.Join(dir, "out", "verse."+format)
			m, err := Encode(ctx, src, dst, format)
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(dst)
			if err != nil {
				t.Fatal(err)
			}
			if m.MimeType != w.mime || m.SampleRate != w.rate || m.Channels != 1 || m.SizeBytes != st.Size() {
				t.Errorf("meta %+v; want %s, %d Hz, mono, %d bytes", m, w.mime, w.rate, st.Size())
			}
			if math.Abs(m.DurationSec-srcDur) > 0.08 {
				t.Errorf("duration %.3f s, source %.3f s", m.DurationSec, srcDur)
			}
			if m.BitrateKbps < w.kbpsLow || m.BitrateKbps > w.kbpsHigh {
				t.Errorf("bitrate %d kb/s, want %d..%d", m.BitrateKbps, w.kbpsLow, w.kbpsHigh)
			}
			p, err := Probe(ctx, dst)
			if err != nil {
				t.Fatal(err)
			}
			if p != m {
				t.Errorf("Probe %+v disagrees with Encode %+v", p, m)
			}
			// The output decodes back to the same sound.
			back, err := Clean(ctx, dst, filepath.Join(dir, "back-"+format+".wav"), CleanOptions{SampleRate: 22050})
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(back-srcDur) > 0.08 {
				t.Errorf("decoded back to %.3f s, source %.3f s", back, srcDur)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "out", ".enc-*")); len(left) > 0 {
				t.Errorf("temp files left: %v", left)
			}
		})
	}
}

func TestEncodeRejects(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	src := toneFile(t, dir, "tone.wav", 0, 0.3, 0)
	if _, err := Encode(ctx, src, filepath.Join(dir, "x.aiff"), "aiff"); err == nil || !strings.Contains(err.Error(), "unknown format") {
		t.Errorf("unknown format: got %v", err)
	}
	junk := writeBytes(t, dir, "junk.wav", bytes.Repeat([]byte{0x5a, 0x13, 0xff}, 500))
	dst := filepath.Join(dir, "out.ogg")
	_, err := Encode(ctx, junk, dst, "ogg")
	if ReasonOf(err) != Corrupt || !strings.Contains(err.Error(), junk) {
		t.Errorf("junk input: got %v, want a corrupt-file error naming it", err)
	}
	if _, serr := os.Stat(dst); !os.IsNotExist(serr) {
		t.Errorf("failed encode left %s", dst)
	}
	if _, err := Probe(ctx, junk); ReasonOf(err) != Corrupt {
		t.Errorf("Probe of junk: got %v, want corrupt", err)
	}
	if _, err := Probe(ctx, filepath.Join(dir, "none.ogg")); ReasonOf(err) != Missing {
		t.Errorf("Probe of a missing file: got %v, want missing", err)
	}
}

func TestProbeCountsSamplesWithoutDuration(t *testing.T) {
	dir := t.TempDir()
	src := toneFile(t, dir, "tone.wav", 0, 1.25, 0)
	// A WebM written as a live stream carries no duration, like a browser
	// recording.
	live := filepath.Join(dir, "live.webm")
	ffmpegT(t, "-i", src, "-c:a", "libopus", "-live", "1", "-cluster_time_limit", "200", "-f", "webm", live)
	m, err := Probe(context.Background(), live)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(m.DurationSec-1.25) > 0.03 || m.BitrateKbps == 0 {
		t.Errorf("meta %+v; want 1.25 s and a bitrate", m)
	}
}

func TestCheck(t *testing.T) {
	if err := Check(); err != nil {
		t.Fatalf("ffmpeg is installed here: %v", err)
	}
	t.Setenv("PATH", t.TempDir())
	err := Check()
	if err == nil || !strings.Contains(err.Error(), "ffmpeg not found") || !strings.Contains(err.Error(), "apt-get install ffmpeg") {
		t.Errorf("without ffmpeg: got %v, want how to install it", err)
	}
}

func TestParseWAV(t *testing.T) {
	samples := []int16{0, 1, -1, 32767, -32768, 1234}
	data := make([]byte, 0, 2*len(samples))
	for _, s := range samples {
		data = binary.LittleEndian.AppendUint16(data, uint16(s))
	}
	chunk := func(id string, body []byte, size uint32) []byte {
		b := append([]byte(id), binary.LittleEndian.AppendUint32(nil, size)...)
		b = append(b, body...)
		if len(body)%2 == 1 {
			b = append(b, 0)
		}
		return b
	}
	fmtBody := []byte{1, 0, 1, 0, 0x80, 0x3e, 0, 0, 0, 0x7d, 0, 0, 2, 0, 16, 0}
	build := func(dataSize uint32) []byte {
		b := append([]byte("RIFF\xff\xff\xff\xffWAVE"), chunk("fmt ", fmtBody, 16)...)
		b = append(b, chunk("LIST", []byte("INFOabc"), 7)...)
		return append(b, chunk("data", data, dataSize)...)
	}
	for _, size := range []uint32{uint32(len(data)), 0xFFFFFFFF, 0, 1 << 30} {
		p, err := parseWAV(bytes.NewReader(build(size)))
		if err != nil {
			t.Fatalf("data size %d: %v", size, err)
		}
		if p.Rate != 16000 || p.Channels != 1 || !equal(p.Samples, samples) {
			t.Errorf("data size %d: got %+v", size, p)
		}
	}
	// Round trip through writeWAV.
	path := filepath.Join(t.TempDir(), "a.wav")
	if err := writeWAV(path, &PCM{Rate: 8000, Channels: 1, Samples: samples}); err != nil {
		t.Fatal(err)
	}
	p, err := ReadWAV(path)
	if err != nil || p.Rate != 8000 || !equal(p.Samples, samples) {
		t.Errorf("round trip: %+v, %v", p, err)
	}
	for _, bad := range [][]byte{nil, []byte("RIFF\x00\x00\x00\x00WAVX"), []byte("RIFF\x00\x00\x00\x00WAVE")} {
		if _, err := parseWAV(bytes.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzParseWAV(f *testing.F) {
	f.Add([]byte("RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\x3e\x00\x00\x00\x7d\x00\x00\x02\x00\x10\x00data\x04\x00\x00\x00\x01\x00\x02\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseWAV(bytes.NewReader(b))
		if err == nil && (p.Rate < 1 || p.Channels < 1 || 2*len(p.Samples) > len(b)) {
			t.Fatalf("parsed %d bytes into %d Hz, %d channels, %d samples", len(b), p.Rate, p.Channels, len(p.Samples))
		}
	})
}

func equal(a, b []int16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
