package audio

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strconv"
)

// CleanOptions say how Clean prepares a recording for a model.
type CleanOptions struct {
	// SampleRate is the engine's rate in Hz; 0 keeps the input's rate.
	SampleRate int
	// Trim cuts leading and trailing silence.
	Trim bool
	// ThresholdDB is the level (dBFS, RMS over 10 ms frames) below which a
	// frame counts as silence; 0 means -40.
	ThresholdDB float64
	// PaddingMS is how much of the original audio to keep around the sound
	// when trimming; 0 means 100, a negative value keeps none.
	PaddingMS int
	// Normalize scales the sound to a common loudness.
	Normalize bool
	// MaxSeconds bounds what is decoded: a longer recording is TooLong
	// (0 = no bound).
	MaxSeconds float64
}

const (
	defaultThresholdDB = -40
	defaultPaddingMS   = 100
	// Loudness target: RMS of the non-silent frames, limited so that the
	// peak stays below the ceiling and quiet noise is not blown up.
	targetRMSDB  = -20
	peakCeilDB   = -1
	maxGainDB    = 30
	frameSeconds = 0.010
	// A decode this much shorter than the container says is a truncated file.
	truncatedAbs = 0.25
	truncatedRel = 0.05
)

func (o CleanOptions) threshold() float64 {
	if o.ThresholdDB == 0 {
		return defaultThresholdDB
	}
	return o.ThresholdDB
}

func (o CleanOptions) padding() int {
	switch {
	case o.PaddingMS == 0:
		return defaultPaddingMS
	case o.PaddingMS < 0:
		return 0
	}
	return o.PaddingMS
}

// Clean decodes src (webm, ogg, opus, mp3, m4a, wav, flac — anything ffmpeg
// reads) to mono 16-bit PCM WAV at o.SampleRate, trims silence and
// normalises as asked, and writes dst atomically. It returns the duration
// of what it wrote. An unusable input (missing, corrupt or truncated, not
// audio, no samples, nothing above the threshold) comes back as a
// *FileError and leaves dst untouched.
func Clean(ctx context.Context, src, dst string, o CleanOptions) (durationSec float64, err error) {
	p, err := decode(ctx, src, o.SampleRate, o.MaxSeconds)
	if err != nil {
		return 0, err
	}
	first, last := activeSpan(p, o.threshold())
	if first < 0 {
		return 0, &FileError{Path: src, Reason: Silent,
			Detail: fmt.Sprintf("nothing above %.0f dBFS in %.2f s", o.threshold(), p.Duration())}
	}
	if o.Trim {
		pad := o.padding() * p.Rate / 1000
		start, end := max(0, first-pad), min(len(p.Samples), last+pad)
		p.Samples = p.Samples[start:end]
	}
	if o.Normalize {
		normalize(p, o.threshold())
	}
	if err := writeWAV(dst, p); err != nil {
		return 0, fmt.Errorf("clean %s: %w", src, err)
	}
	return p.Duration(), nil
}

// decode runs ffmpeg to get mono 16-bit PCM of src at rate (0 = as is),
// at most maxSec seconds of it (0 = all). Decoder errors, and a decode
// clearly shorter than the container's stated duration, make the file
// Corrupt; a longer one than maxSec is TooLong.
func decode(ctx context.Context, src string, rate int, maxSec float64) (*PCM, error) {
	if err := statInput(src); err != nil {
		return nil, err
	}
	if err := checkWAVLength(src); err != nil {
		return nil, err
	}
	in := toolPath(src)
	args := append([]string{"-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info"}, untrustedInput...)
	args = append(args, "-i", in, "-map", "0:a:0", "-ac", "1")
	if rate > 0 {
		args = append(args, "-ar", strconv.Itoa(rate))
	}
	if maxSec > 0 {
		// Decoding stops just past the bound, whatever the file claims.
		args = append(args, "-t", strconv.FormatFloat(maxSec+1, 'f', 3, 64))
	}
	args = append(args, "-c:a", "pcm_s16le", "-map_metadata", "-1",
		"-fflags", "+bitexact", "-flags:a", "+bitexact", "-f", "wav", "pipe:1")
	out, stderr, failed, err := runTool(ctx, "ffmpeg", args...)
	if err != nil {
		return nil, err
	}
	log := parseLog(stderr, in)
	if failed {
		return nil, classify(src, log.errors)
	}
	if len(log.errors) > 0 {
		return nil, &FileError{Path: src, Reason: Corrupt, Detail: log.errors[0]}
	}
	p, perr := parseWAV(bytes.NewReader(out))
	if perr != nil {
		return nil, fmt.Errorf("decode %s: ffmpeg output: %w", src, perr)
	}
	if len(p.Samples) == 0 {
		return nil, &FileError{Path: src, Reason: Empty, Detail: "no audio samples"}
	}
	if maxSec > 0 && (p.Duration() > maxSec || log.duration > maxSec) {
		return nil, &FileError{Path: src, Reason: TooLong,
			Detail: fmt.Sprintf("over %s s; this worker decodes recordings up to that (setting max-recording-seconds)", strconv.FormatFloat(maxSec, 'f', -1, 64))}
	}
	if got, want := p.Duration(), log.duration; want > 0 && !log.estimated &&
		want-got > truncatedAbs && want-got > truncatedRel*want {
		return nil, &FileError{Path: src, Reason: Corrupt,
			Detail: fmt.Sprintf("truncated: %.2f s decoded of %.2f s", got, want)}
	}
	return p, nil
}

// activeSpan finds the samples [first, last) from the start of the first
// frame to the end of the last frame whose RMS is above thresholdDB.
// first is -1 when every frame is below it.
func activeSpan(p *PCM, thresholdDB float64) (first, last int) {
	n := frameLen(p.Rate)
	limit := levelSquared(thresholdDB)
	first, last = -1, -1
	for start := 0; start < len(p.Samples); start += n {
		end := min(start+n, len(p.Samples))
		if meanSquare(p.Samples[start:end]) > limit {
			if first < 0 {
				first = start
			}
			last = end
		}
	}
	return first, last
}

// normalize scales the samples so the RMS of the non-silent frames reaches
// the target, without the peak passing the ceiling or the gain passing the
// limit.
func normalize(p *PCM, thresholdDB float64) {
	n := frameLen(p.Rate)
	limit := levelSquared(thresholdDB)
	var sum float64
	var count int
	peak := 0
	for start := 0; start < len(p.Samples); start += n {
		frame := p.Samples[start:min(start+n, len(p.Samples))]
		if ms := meanSquare(frame); ms > limit {
			sum += ms * float64(len(frame))
			count += len(frame)
		}
		for _, s := range frame {
			peak = max(peak, abs(int(s)))
		}
	}
	if count == 0 || peak == 0 {
		return
	}
	rms := math.Sqrt(sum / float64(count))
	gain := min(dbToAmp(targetRMSDB)*32768/rms,
		dbToAmp(peakCeilDB)*32768/float64(peak),
		dbToAmp(maxGainDB))
	for i, s := range p.Samples {
		v := math.Round(float64(s) * gain)
		p.Samples[i] = int16(max(-32768, min(32767, v)))
	}
}

func frameLen(rate int) int { return max(1, int(float64(rate)*frameSeconds)) }

// levelSquared is the mean square of full-scale samples at db dBFS.
func levelSquared(db float64) float64 {
	a := dbToAmp(db) * 32768
	return a * a
}

func meanSquare(s []int16) float64 {
	if len(s) == 0 {
		return 0
	}
	var sum float64
	for _, v := range s {
		f := float64(v)
		sum += f * f
	}
	return sum / float64(len(s))
}

func dbToAmp(db float64) float64 { return math.Pow(10, db/20) }

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
