package audio

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var inputFormats = []string{"webm", "ogg", "opus", "mp3", "m4a", "wav", "flac"}

func TestCleanDecodesEachFormat(t *testing.T) {
	dir := t.TempDir()
	speech := speechWAV(t, dir)
	ctx := context.Background()
	o := CleanOptions{SampleRate: 16000, Trim: true, Normalize: true}
	refDur, err := Clean(ctx, speech, filepath.Join(dir, "ref.wav"), o)
	if err != nil {
		t.Fatal(err)
	}
	if refDur < 1.5 {
		t.Fatalf("reference speech lasts %.2f s, want a sentence", refDur)
	}
	for _, ext := range append(inputFormats, "stereo.ogg") {
		t.Run(ext, func(t *testing.T) {
			var src string
			if ext == "stereo.ogg" {
				src = transcode(t, speech, filepath.Join(dir, "in."+ext), "-ac", "2", "-ar", "44100")
			} else {
				src = transcode(t, speech, filepath.Join(dir, "in."+ext))
			}
			dst := filepath.Join(dir, "out-"+ext+".wav")
			dur, err := Clean(ctx, src, dst, o)
			if err != nil {
				t.Fatal(err)
			}
			p, err := ReadWAV(dst)
			if err != nil {
				t.Fatal(err)
			}
			if p.Rate != 16000 || p.Channels != 1 {
				t.Fatalf("output is %d Hz, %d channels; want 16000 Hz mono", p.Rate, p.Channels)
			}
			if math.Abs(p.Duration()-dur) > 1e-9 {
				t.Errorf("Clean says %.4f s, file holds %.4f s", dur, p.Duration())
			}
			if math.Abs(dur-refDur) > 0.1 {
				t.Errorf("duration %.3f s, the uncompressed speech gives %.3f s", dur, refDur)
			}
			first, last := activeSpan(p, -40)
			if db := rmsDB(p.Samples[first:last]); db < -23 || db > -19 {
				t.Errorf("normalised speech is at %.1f dBFS RMS, want about %d", db, targetRMSDB)
			}
		})
	}
}

func TestCleanTrimsSilence(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	const lead, tone, tail = 1.0, 0.5, 0.7
	base := toneFile(t, dir, "tone.wav", lead, tone, tail)
	for _, ext := range inputFormats {
		src := base
		if ext != "wav" {
			src = transcode(t, base, filepath.Join(dir, "tone."+ext))
		}
		pads := []int{100}
		if ext == "wav" {
			pads = append(pads, -1, 250)
		}
		for _, pad := range pads {
			padS := max(0, float64(pad)/1000)
			dst := filepath.Join(dir, "out.wav")
			dur, err := Clean(ctx, src, dst, CleanOptions{SampleRate: 22050, Trim: true, PaddingMS: pad})
			if err != nil {
				t.Fatalf("%s: %v", ext, err)
			}
			p, err := ReadWAV(dst)
			if err != nil {
				t.Fatal(err)
			}
			start, end := span(p, 0.1)
			t.Logf("%s padding %d ms: %.3f s before, %.3f s after the tone", ext, pad, start, dur-end)
			if math.Abs(start-padS) > 0.05 {
				t.Errorf("%s padding %d: %.3f s of silence before the tone, want %.3f ± 0.05", ext, pad, start, padS)
			}
			if after := dur - end; math.Abs(after-padS) > 0.05 {
				t.Errorf("%s padding %d: %.3f s of silence after the tone, want %.3f ± 0.05", ext, pad, after, padS)
			}
			if math.Abs((end-start)-tone) > 0.05 {
				t.Errorf("%s padding %d: tone lasts %.3f s, want %.3f", ext, pad, end-start, tone)
			}
		}
	}
	// Without trimming everything stays.
	dur, err := Clean(ctx, base, filepath.Join(dir, "untrimmed.wav"), CleanOptions{SampleRate: 22050})
	if err != nil {
		t.Fatal(err)
	}
	if want := lead + tone + tail; math.Abs(dur-want) > 0.02 {
		t.Errorf("untrimmed duration %.3f s, want %.3f", dur, want)
	}
}

func TestCleanKeepsSourceRate(t *testing.T) {
	dir := t.TempDir()
	src := transcode(t, toneFile(t, dir, "tone.wav", 0.2, 0.5, 0.2), filepath.Join(dir, "tone.flac"), "-ar", "24000")
	dst := filepath.Join(dir, "out.wav")
	if _, err := Clean(context.Background(), src, dst, CleanOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := ReadWAV(dst)
	if err != nil {
		t.Fatal(err)
	}
	if p.Rate != 24000 {
		t.Errorf("rate %d, want the input's 24000", p.Rate)
	}
}

func TestNormalize(t *testing.T) {
	sine := func(n int, amp float64) []int16 {
		s := make([]int16, n)
		for i := range s {
			s[i] = int16(amp * math.Sin(2*math.Pi*440*float64(i)/16000))
		}
		return s
	}
	// A quiet tone is brought up to the target.
	p := &PCM{Rate: 16000, Channels: 1, Samples: sine(16000, 500)}
	normalize(p, -40)
	if db := rmsDB(p.Samples); math.Abs(db-targetRMSDB) > 0.1 {
		t.Errorf("quiet tone normalised to %.2f dBFS, want %d", db, targetRMSDB)
	}
	// A loud click caps the gain at the peak ceiling.
	p = &PCM{Rate: 16000, Channels: 1, Samples: sine(16000, 500)}
	p.Samples[8000] = 20000
	normalize(p, -40)
	peak := 0
	for _, s := range p.Samples {
		peak = max(peak, abs(int(s)))
	}
	if ceil := dbToAmp(peakCeilDB) * 32768; float64(peak) > ceil+1 || float64(peak) < ceil-2 {
		t.Errorf("peak %d after normalising, want the ceiling %.0f", peak, ceil)
	}
	// Faint noise under a low threshold is not amplified past the gain limit.
	p = &PCM{Rate: 16000, Channels: 1, Samples: sine(16000, 20)}
	before := rmsDB(p.Samples)
	normalize(p, -70)
	if gain := rmsDB(p.Samples) - before; math.Abs(gain-maxGainDB) > 0.2 {
		t.Errorf("gain %.2f dB, want the %d dB limit", gain, maxGainDB)
	}
}

func TestCleanRejects(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	base := toneFile(t, dir, "tone.wav", 0.3, 2.0, 0.3)
	junk := make([]byte, 4000)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range junk {
		junk[i] = byte(rng.UintN(256))
	}
	truncate := func(ext string) string {
		src := base
		if ext != "wav" {
			src = transcode(t, base, filepath.Join(dir, "full."+ext))
		}
		b := readBytes(t, src)
		return writeBytes(t, dir, "cut."+ext, b[:len(b)/2&^3])
	}
	// A listener the URL playlist points at: nothing may connect to it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var connected atomic.Bool
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			connected.Store(true)
			c.Close()
		}
	}()
	listener := ln.Addr().String()
	defer func() {
		if connected.Load() {
			t.Error("ffmpeg connected to the URL a playlist named")
		}
	}()
	png := filepath.Join(dir, "image.png")
	ffmpegT(t, "-f", "lavfi", "-i", "color=c=red:s=16x16", "-frames:v", "1", png)
	silent := filepath.Join(dir, "quiet.ogg")
	ffmpegT(t, "-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", "1.5", silent)
	noSamples := filepath.Join(dir, "nosamples.wav")
	ffmpegT(t, "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0", "-c:a", "pcm_s16le", noSamples)

	cases := []struct {
		name, path string
		reason     Reason
		detail     string
	}{
		{"random bytes", writeBytes(t, dir, "junk.webm", junk), Corrupt, ""},
		{"random bytes after a header", writeBytes(t, dir, "junk.ogg", append([]byte("OggS"), junk...)), Corrupt, ""},
		{"truncated wav", truncate("wav"), Corrupt, "truncated"},
		{"truncated flac", truncate("flac"), Corrupt, ""},
		{"truncated mp3", truncate("mp3"), Corrupt, "truncated"},
		{"truncated webm", truncate("webm"), Corrupt, ""},
		{"truncated m4a", truncate("m4a"), Corrupt, ""},
		{"text", writeBytes(t, dir, "notes.mp3", []byte("In the beginning was the Word.\n")), Corrupt, ""},
		{"image", png, NotAudio, "not in an audio container"},
		// Text playlists named like recordings: ffmpeg would follow them to
		// other local files or URLs.
		{"hls playlist", writeBytes(t, dir, "hls.webm", []byte("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n"+base+"\n#EXT-X-ENDLIST\n")), NotAudio, "playlist"},
		{"ffconcat", writeBytes(t, dir, "concat.webm", []byte("ffconcat version 1.0\nfile "+base+"\n")), NotAudio, "playlist"},
		{"hls pointing at a URL", writeBytes(t, dir, "url.webm", []byte("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://"+listener+"/x.wav\n#EXT-X-ENDLIST\n")), NotAudio, "playlist"},
		{"zero bytes", writeBytes(t, dir, "zero.wav", nil), Empty, ""},
		{"no samples", noSamples, Empty, "no audio samples"},
		{"silence", silent, Silent, "nothing above -40 dBFS"},
		{"missing", filepath.Join(dir, "nope.webm"), Missing, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Clean(ctx, c.path, filepath.Join(dir, "out", c.name+".wav"), CleanOptions{Trim: true, Normalize: true})
			if err == nil {
				t.Fatal("accepted")
			}
			if got := ReasonOf(err); got != c.reason {
				t.Fatalf("reason %q (%v), want %q", got, err, c.reason)
			}
			msg := err.Error()
			t.Log(msg)
			if strings.Contains(msg, "\n") || !strings.Contains(msg, c.path) || !strings.Contains(msg, ": "+string(c.reason)) {
				t.Errorf("message %q should be one line naming the file and the reason", msg)
			}
			if !strings.Contains(strings.ToLower(msg), strings.ToLower(c.detail)) {
				t.Errorf("message %q should say %q", msg, c.detail)
			}
			if matches, _ := filepath.Glob(filepath.Join(dir, "out", "*")); len(matches) > 0 {
				t.Errorf("left files behind: %v", matches)
			}
		})
	}
}

func TestCleanCancelled(t *testing.T) {
	dir := t.TempDir()
	src := toneFile(t, dir, "tone.wav", 0.1, 0.3, 0.1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Clean(ctx, src, filepath.Join(dir, "out.wav"), CleanOptions{})
	if !errors.Is(err, context.Canceled) || ReasonOf(err) != "" {
		t.Fatalf("got %v (reason %q), want the context's error and no file reason", err, ReasonOf(err))
	}
}

// BenchmarkClean: one recording (espeak-ng speech, Opus in WebM) to a
// trimmed, normalised 16 kHz WAV, ffmpeg process included.
func BenchmarkClean(b *testing.B) {
	dir := b.TempDir()
	src := transcode(b, speechWAV(b, dir), filepath.Join(dir, "speech.webm"))
	dst := filepath.Join(dir, "out.wav")
	var dur float64
	cpu0 := cpuTime()
	for b.Loop() {
		var err error
		if dur, err = Clean(context.Background(), src, dst, CleanOptions{SampleRate: 16000, Trim: true, Normalize: true}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(dur*float64(b.N)/b.Elapsed().Seconds(), "audio-s/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
}

// cpuTime is the CPU this process and its finished children have used:
// unlike wall time, it does not grow with the load of a shared machine.
func cpuTime() time.Duration {
	var self, kids syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
}

func TestCleanNameWithColon(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	toneFile(t, dir, "GEN 1:1.wav", 0.2, 0.4, 0.2)
	if err := os.Rename(filepath.Join(dir, "GEN 1:1.wav"), filepath.Join(dir, "http:x.wav")); err != nil {
		t.Fatal(err)
	}
	dur, err := Clean(context.Background(), "http:x.wav", "pipe:out.wav", CleanOptions{Trim: true, PaddingMS: -1})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(dur-0.4) > 0.03 {
		t.Errorf("duration %.3f, want 0.4", dur)
	}
	if _, err := Encode(context.Background(), "pipe:out.wav", "file:x.ogg", "ogg"); err != nil {
		t.Fatal(err)
	}
	if _, err := Probe(context.Background(), "file:x.ogg"); err != nil {
		t.Fatal(err)
	}
}

// A recording over the bound is refused as too long, without decoding it
// all: the bound is a setting, named in the message.
func TestCleanRefusesLongRecordings(t *testing.T) {
	dir := t.TempDir()
	src := toneFile(t, dir, "tone.wav", 0.3, 2.0, 0.3)
	webm := transcode(t, src, filepath.Join(dir, "tone.webm"))
	for _, in := range []string{src, webm} {
		_, err := Clean(context.Background(), in, filepath.Join(dir, "out.wav"), CleanOptions{MaxSeconds: 1.5})
		if ReasonOf(err) != TooLong || !strings.Contains(err.Error(), "max-recording-seconds") {
			t.Fatalf("%s: err = %v, want too long naming the setting", in, err)
		}
		if _, err := Clean(context.Background(), in, filepath.Join(dir, "out.wav"), CleanOptions{MaxSeconds: 5}); err != nil {
			t.Fatalf("%s within the bound: %v", in, err)
		}
	}
}
