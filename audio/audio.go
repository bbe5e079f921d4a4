// Package audio turns recordings into what models need and model output into
// what the Codex editor plays, by running ffmpeg and ffprobe: decode any
// input to mono 16-bit PCM WAV with leading/trailing silence trimmed and
// loudness normalised (Clean), encode outputs (Encode), and read the
// attachment metadata of a file (Probe).
package audio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Reason classifies why a file cannot be used. Callers count rejections by it.
type Reason string

const (
	Missing  Reason = "missing"   // no file at the path
	Corrupt  Reason = "corrupt"   // undecodable, truncated or damaged
	NotAudio Reason = "not audio" // a readable file without an audio stream
	Empty    Reason = "empty"     // decodes to no samples at all
	Silent   Reason = "silent"    // nothing above the silence threshold
	TooLong  Reason = "too long"  // longer than the worker decodes
)

// untrustedInput are the ffmpeg/ffprobe options for a file from a project:
// only local files and pipes, and only the audio containers recorders
// write. A text playlist (HLS, ffconcat) named .webm would otherwise make
// ffmpeg read other local files or fetch a URL; it is refused as not audio.
var untrustedInput = []string{
	"-protocol_whitelist", "file,pipe",
	"-format_whitelist", "wav,w64,matroska,webm,ogg,mp3,mov,mp4,m4a,flac,aac,aiff,caf",
}

// FileError is a file that was read but cannot be used, with the reason.
type FileError struct {
	Path   string
	Reason Reason
	Detail string
}

func (e *FileError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("audio %s: %s", e.Path, e.Reason)
	}
	return fmt.Sprintf("audio %s: %s: %s", e.Path, e.Reason, e.Detail)
}

// ReasonOf returns the reason behind err, or "" when err is not a FileError
// (a cancelled context, a missing ffmpeg, a full disk).
func ReasonOf(err error) Reason {
	var fe *FileError
	if errors.As(err, &fe) {
		return fe.Reason
	}
	return ""
}

const installHint = "install it: Debian/Ubuntu `sudo apt-get install ffmpeg`, Fedora `sudo dnf install ffmpeg`, macOS `brew install ffmpeg`"

// encodersNeeded are the ffmpeg encoders Encode relies on.
var encodersNeeded = []string{"libopus", "libvorbis", "libmp3lame", "pcm_s16le"}

// Check reports whether ffmpeg and ffprobe are installed and able to do
// everything this package asks of them, with a message saying how to fix it.
func Check() error {
	for _, tool := range []string{"ffmpeg", "ffprobe"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found on PATH: %s", tool, installHint)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-encoders").Output()
	if err != nil {
		return fmt.Errorf("run ffmpeg -encoders: %w; %s", err, installHint)
	}
	var missing []string
	for _, enc := range encodersNeeded {
		if !regexp.MustCompile(`(?m)^\s*\S+\s+` + enc + `\s`).Match(out) {
			missing = append(missing, enc)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("ffmpeg lacks encoders %s: install a full build (%s)", strings.Join(missing, ", "), installHint)
	}
	return nil
}

// ffmpegLog is what an ffmpeg run said on stderr (run with -loglevel level+info).
type ffmpegLog struct {
	errors    []string // error and fatal lines, without their prefixes
	duration  float64  // the input's declared duration; 0 when unknown
	estimated bool     // the declared duration is a guess from the bitrate
}

var (
	logPrefix   = regexp.MustCompile(`^(\[[^\]]* @ 0x[0-9a-f]+\] )?\[(\w+)\] ?`)
	durationRE  = regexp.MustCompile(`Duration: (\d+):(\d{2}):(\d{2}(?:\.\d+)?)`)
	estimatedRE = regexp.MustCompile(`(?i)estimating duration from bitrate`)
)

func parseLog(stderr []byte, path string) ffmpegLog {
	var l ffmpegLog
	for _, line := range strings.Split(string(stderr), "\n") {
		line = strings.TrimSpace(strings.TrimRight(line, "\r"))
		m := logPrefix.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		msg := strings.TrimSpace(line[len(m[0]):])
		switch m[2] {
		case "error", "fatal", "panic":
			msg = strings.TrimPrefix(msg, path+": ")
			if msg != "" && !strings.HasPrefix(msg, "Conversion failed") {
				l.errors = append(l.errors, msg)
			}
		case "warning":
			if estimatedRE.MatchString(msg) {
				l.estimated = true
			}
		case "info":
			if d := durationRE.FindStringSubmatch(msg); d != nil && l.duration == 0 {
				h, _ := strconv.Atoi(d[1])
				mi, _ := strconv.Atoi(d[2])
				s, _ := strconv.ParseFloat(d[3], 64)
				l.duration = float64(h*3600+mi*60) + s
			}
		}
	}
	return l
}

// classify turns a failed ffmpeg/ffprobe run on path into a FileError.
func classify(path string, errs []string) *FileError {
	detail := "undecodable"
	if len(errs) > 0 {
		detail = errs[0]
	}
	low := strings.ToLower(detail)
	switch {
	case strings.Contains(low, "no such file"):
		return &FileError{Path: path, Reason: Missing}
	case strings.Contains(low, "matches no streams"), strings.Contains(low, "does not contain any stream"):
		return &FileError{Path: path, Reason: NotAudio, Detail: "no audio stream"}
	case strings.Contains(low, "not on whitelist"):
		return &FileError{Path: path, Reason: NotAudio, Detail: "not in an audio container this worker reads (a playlist, an image or another format)"}
	}
	return &FileError{Path: path, Reason: Corrupt, Detail: detail}
}

// runTool runs ffmpeg or ffprobe, returning stdout, stderr and whether it
// exited with a failure status. err is for everything else: a tool that
// could not start, or a cancelled context (never reported as a file problem).
func runTool(ctx context.Context, name string, args ...string) (stdout, stderr []byte, failed bool, err error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return nil, nil, false, ctx.Err()
	}
	if runErr != nil {
		var exit *exec.ExitError
		if errors.Is(runErr, exec.ErrNotFound) {
			return nil, nil, false, fmt.Errorf("%s not found on PATH: %s", name, installHint)
		}
		if !errors.As(runErr, &exit) {
			return nil, nil, false, fmt.Errorf("run %s: %w", name, runErr)
		}
		failed = true
	}
	return out.Bytes(), errb.Bytes(), failed, nil
}

// toolPath is how a file is named to ffmpeg: absolute, so that a name with
// a colon is never taken for a protocol ("http:", "pipe:").
func toolPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// statInput makes a missing or unreadable input a FileError before any
// subprocess runs.
func statInput(path string) error {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return &FileError{Path: path, Reason: Missing}
	}
	if err != nil {
		return fmt.Errorf("stat audio: %w", err)
	}
	if st.IsDir() {
		return &FileError{Path: path, Reason: NotAudio, Detail: "a directory"}
	}
	if st.Size() == 0 {
		return &FileError{Path: path, Reason: Empty, Detail: "0 bytes"}
	}
	return nil
}
