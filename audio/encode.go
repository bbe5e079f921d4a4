package audio

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Meta is what the Codex editor records about an audio attachment
// (attachment "metadata": mimeType, sizeBytes, sampleRate, channels,
// durationSec, bitrateKbps).
type Meta struct {
	MimeType    string  `json:"mimeType"`
	SizeBytes   int64   `json:"sizeBytes"`
	SampleRate  int     `json:"sampleRate"`
	Channels    int     `json:"channels"`
	DurationSec float64 `json:"durationSec"`
	BitrateKbps int     `json:"bitrateKbps"`
}

// outputFormat is how Encode writes one format.
type outputFormat struct {
	mime string
	args []string
}

// Speech-sized settings: mono speech at these rates is transparent enough
// for listening and keeps repositories small.
var outputFormats = map[string]outputFormat{
	"wav":  {"audio/wav", []string{"-c:a", "pcm_s16le", "-f", "wav"}},
	"ogg":  {"audio/ogg", []string{"-c:a", "libvorbis", "-q:a", "4", "-f", "ogg"}},
	"mp3":  {"audio/mpeg", []string{"-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"}},
	"webm": {"audio/webm", []string{"-c:a", "libopus", "-b:a", "48k", "-ar", "48000", "-f", "webm"}},
}

// Formats lists what Encode writes.
func Formats() []string { return []string{"wav", "ogg", "mp3", "webm"} }

// Encode converts srcWAV to format (wav, ogg, mp3 or webm = Opus in WebM),
// writes dst atomically and returns the metadata of what it wrote.
func Encode(ctx context.Context, srcWAV, dst, format string) (Meta, error) {
	of, ok := outputFormats[format]
	if !ok {
		return Meta{}, fmt.Errorf("encode %s: unknown format %q (want %s)", srcWAV, format, strings.Join(Formats(), ", "))
	}
	if err := statInput(srcWAV); err != nil {
		return Meta{}, err
	}
	dir := filepath.Dir(toolPath(dst))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Meta{}, fmt.Errorf("encode %s: %w", srcWAV, err)
	}
	tmp, err := os.CreateTemp(dir, ".enc-*."+format)
	if err != nil {
		return Meta{}, fmt.Errorf("encode %s: %w", srcWAV, err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name()) // no-op after the rename
	// The input is an engine's output: read it as untrusted too.
	args := append([]string{"-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+error", "-y"}, untrustedInput...)
	args = append(args, "-i", toolPath(srcWAV), "-map", "0:a:0", "-map_metadata", "-1")
	args = append(append(args, of.args...), tmp.Name())
	_, stderr, failed, err := runTool(ctx, "ffmpeg", args...)
	if err != nil {
		return Meta{}, err
	}
	if failed {
		return Meta{}, classify(srcWAV, parseLog(stderr, toolPath(srcWAV)).errors)
	}
	if err := syncFile(tmp.Name()); err != nil {
		return Meta{}, fmt.Errorf("encode %s: %w", srcWAV, err)
	}
	m, err := Probe(ctx, tmp.Name())
	if err != nil {
		return Meta{}, fmt.Errorf("encode %s: check output: %w", srcWAV, err)
	}
	m.MimeType = of.mime
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return Meta{}, fmt.Errorf("encode %s: %w", srcWAV, err)
	}
	return m, nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type probeOutput struct {
	Streams []struct {
		CodecName  string `json:"codec_name"`
		SampleRate string `json:"sample_rate"`
		Channels   int    `json:"channels"`
		Duration   string `json:"duration"`
	} `json:"streams"`
	Format struct {
		FormatName string `json:"format_name"`
		Duration   string `json:"duration"`
		BitRate    string `json:"bit_rate"`
	} `json:"format"`
}

// probeMaxSeconds bounds the decode Probe falls back on to count a
// streamed file's samples.
const probeMaxSeconds = 3600

// Probe reads an audio file's metadata with ffprobe.
func Probe(ctx context.Context, path string) (Meta, error) {
	if err := statInput(path); err != nil {
		return Meta{}, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return Meta{}, fmt.Errorf("probe %s: %w", path, err)
	}
	args := append([]string{"-v", "error"}, untrustedInput...)
	args = append(args, "-of", "json", "-select_streams", "a:0",
		"-show_entries", "stream=codec_name,sample_rate,channels,duration:format=format_name,duration,bit_rate",
		toolPath(path))
	out, stderr, failed, err := runTool(ctx, "ffprobe", args...)
	if err != nil {
		return Meta{}, err
	}
	if failed {
		var errs []string
		for _, l := range strings.Split(strings.TrimSpace(string(stderr)), "\n") {
			errs = append(errs, strings.TrimPrefix(strings.TrimSpace(l), toolPath(path)+": "))
		}
		return Meta{}, classify(path, errs)
	}
	var po probeOutput
	if err := json.Unmarshal(out, &po); err != nil {
		return Meta{}, fmt.Errorf("probe %s: ffprobe output: %w", path, err)
	}
	if len(po.Streams) == 0 {
		return Meta{}, &FileError{Path: path, Reason: NotAudio, Detail: "no audio stream"}
	}
	s := po.Streams[0]
	m := Meta{
		MimeType:  mimeOf(po.Format.FormatName, s.CodecName, path),
		SizeBytes: st.Size(),
		Channels:  s.Channels,
	}
	m.SampleRate, _ = strconv.Atoi(s.SampleRate)
	m.DurationSec = parseSeconds(po.Format.Duration)
	if m.DurationSec == 0 {
		m.DurationSec = parseSeconds(s.Duration)
	}
	if m.DurationSec == 0 {
		// Recorders that stream WebM leave the duration out: count samples.
		p, err := decode(ctx, path, 0, probeMaxSeconds)
		if err != nil {
			return Meta{}, err
		}
		m.DurationSec = p.Duration()
	}
	m.DurationSec = math.Round(m.DurationSec*1000) / 1000
	if br, err := strconv.ParseFloat(po.Format.BitRate, 64); err == nil && br > 0 {
		m.BitrateKbps = int(math.Round(br / 1000))
	} else if m.DurationSec > 0 {
		m.BitrateKbps = int(math.Round(float64(m.SizeBytes) * 8 / m.DurationSec / 1000))
	}
	return m, nil
}

func parseSeconds(s string) float64 {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// mimeOf maps ffprobe's container name to the MIME type browsers use.
func mimeOf(formatName, codec, path string) string {
	switch {
	case formatName == "wav":
		return "audio/wav"
	case formatName == "ogg":
		return "audio/ogg"
	case formatName == "mp3":
		return "audio/mpeg"
	case formatName == "flac":
		return "audio/flac"
	case strings.Contains(formatName, "webm"):
		if strings.EqualFold(filepath.Ext(path), ".mkv") {
			return "audio/x-matroska"
		}
		return "audio/webm"
	case strings.Contains(formatName, "mp4"):
		return "audio/mp4"
	}
	if codec != "" {
		return "audio/" + codec
	}
	return "application/octet-stream"
}
