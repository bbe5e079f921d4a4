package audio

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// PCM is 16-bit audio in memory; Samples are interleaved by channel.
type PCM struct {
	Rate     int
	Channels int
	Samples  []int16
}

// Duration is the length in seconds.
func (p *PCM) Duration() float64 {
	if p.Rate == 0 || p.Channels == 0 {
		return 0
	}
	return float64(len(p.Samples)/p.Channels) / float64(p.Rate)
}

// ReadWAV reads a 16-bit PCM WAV file.
func ReadWAV(path string) (*PCM, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := parseWAV(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("read wav %s: %w", path, err)
	}
	return p, nil
}

var errNotWAV = errors.New("not a 16-bit PCM WAV")

// parseWAV reads a RIFF/WAVE stream. A data chunk whose size is unknown
// (0 or 0xFFFFFFFF, as ffmpeg writes to a pipe) runs to the end of the stream.
func parseWAV(r io.Reader) (*PCM, error) {
	var hdr [12]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, errNotWAV
	}
	if string(hdr[0:4]) != "RIFF" || string(hdr[8:12]) != "WAVE" {
		return nil, errNotWAV
	}
	p := &PCM{}
	for {
		var ch [8]byte
		if _, err := io.ReadFull(r, ch[:]); err != nil {
			return nil, fmt.Errorf("%w: no data chunk", errNotWAV)
		}
		id, size := string(ch[0:4]), binary.LittleEndian.Uint32(ch[4:8])
		switch id {
		case "fmt ":
			if size < 16 || size > 1<<16 {
				return nil, fmt.Errorf("%w: fmt chunk of %d bytes", errNotWAV, size)
			}
			b := make([]byte, size+size%2)
			if _, err := io.ReadFull(r, b); err != nil {
				return nil, fmt.Errorf("%w: short fmt chunk", errNotWAV)
			}
			format := binary.LittleEndian.Uint16(b[0:2])
			p.Channels = int(binary.LittleEndian.Uint16(b[2:4]))
			p.Rate = int(binary.LittleEndian.Uint32(b[4:8]))
			bits := binary.LittleEndian.Uint16(b[14:16])
			if (format != 1 && format != 0xFFFE) || bits != 16 || p.Channels < 1 || p.Rate < 1 {
				return nil, fmt.Errorf("%w: format %d, %d bits, %d channels", errNotWAV, format, bits, p.Channels)
			}
		case "data":
			if p.Rate == 0 {
				return nil, fmt.Errorf("%w: data before fmt", errNotWAV)
			}
			var data []byte
			var err error
			if size == 0 || size == 0xFFFFFFFF {
				data, err = io.ReadAll(r)
			} else {
				// A data chunk shorter than declared keeps what is there.
				data, err = io.ReadAll(io.LimitReader(r, int64(size)))
			}
			if err != nil {
				return nil, err
			}
			p.Samples = make([]int16, len(data)/2)
			for i := range p.Samples {
				p.Samples[i] = int16(binary.LittleEndian.Uint16(data[2*i:]))
			}
			return p, nil
		default:
			if _, err := io.CopyN(io.Discard, r, int64(size)+int64(size%2)); err != nil {
				return nil, fmt.Errorf("%w: short %q chunk", errNotWAV, id)
			}
		}
	}
}

// writeWAV writes p to path atomically (temp file, fsync, rename).
func writeWAV(path string, p *PCM) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".wav-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	w := bufio.NewWriterSize(tmp, 1<<16)
	dataLen := uint32(2 * len(p.Samples))
	var h [44]byte
	copy(h[0:], "RIFF")
	binary.LittleEndian.PutUint32(h[4:], 36+dataLen)
	copy(h[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(h[16:], 16)
	binary.LittleEndian.PutUint16(h[20:], 1)
	binary.LittleEndian.PutUint16(h[22:], uint16(p.Channels))
	binary.LittleEndian.PutUint32(h[24:], uint32(p.Rate))
	binary.LittleEndian.PutUint32(h[28:], uint32(p.Rate*p.Channels*2))
	binary.LittleEndian.PutUint16(h[32:], uint16(p.Channels*2))
	binary.LittleEndian.PutUint16(h[34:], 16)
	copy(h[36:], "data")
	binary.LittleEndian.PutUint32(h[40:], dataLen)
	w.Write(h[:])
	buf := make([]byte, 0, 1<<16)
	for i, s := range p.Samples {
		buf = binary.LittleEndian.AppendUint16(buf, uint16(s))
		if len(buf) == cap(buf) || i == len(p.Samples)-1 {
			w.Write(buf)
			buf = buf[:0]
		}
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("write wav: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write wav: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write wav: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write wav: %w", err)
	}
	return nil
}

// checkWAVLength rejects a WAV file holding fewer bytes of audio than its
// header declares: ffmpeg would quietly decode the rest and re-estimate the
// duration from the file size. Other files pass.
func checkWAVLength(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("check wav: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("check wav: %w", err)
	}
	r := bufio.NewReader(f)
	var hdr [12]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil || string(hdr[0:4]) != "RIFF" || string(hdr[8:12]) != "WAVE" {
		return nil
	}
	off := int64(12)
	for {
		var ch [8]byte
		if _, err := io.ReadFull(r, ch[:]); err != nil {
			return nil // no data chunk: ffmpeg reports it
		}
		off += 8
		size := int64(binary.LittleEndian.Uint32(ch[4:8]))
		if string(ch[0:4]) == "data" {
			if have := st.Size() - off; size != 0 && size != 0xFFFFFFFF && have < size {
				return &FileError{Path: path, Reason: Corrupt,
					Detail: fmt.Sprintf("truncated: the header declares %d bytes of audio, the file holds %d", size, have)}
			}
			return nil
		}
		skip := size + size%2
		if _, err := r.Discard(int(min(skip, 1<<30))); err != nil {
			return nil
		}
		off += skip
	}
}
