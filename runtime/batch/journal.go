package batch

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// The journal is a file of records, each framed as
//
//	length  uint32, little endian: the payload's bytes
//	crc     uint32, little endian: CRC32C (Castagnoli) of the payload
//	payload length bytes
//
// appended with one write and fsync'ed before the append returns. A crash
// mid-append leaves a torn last record (short, or failing its CRC), which
// Open drops, truncating the file to the last whole record.

const (
	frameHeader = 8
	// maxRecord bounds a record's length, so that a torn length field
	// cannot make Open read (or allocate) gigabytes.
	maxRecord = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Journal is an open journal file, positioned for appends.
type Journal struct {
	f *os.File
}

// OpenJournal opens (creating it, and fsyncing its folder so that the
// file's name survives a power cut) the journal at path, returns the
// payloads of its whole records in order, and truncates whatever follows
// the last one. torn is the bytes dropped.
func OpenJournal(path string) (j *Journal, records [][]byte, torn int64, err error) {
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, os.ErrNotExist)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, 0, err
	}
	defer func() {
		if err != nil {
			_ = f.Close() // the error that matters is err
		}
	}()
	if created {
		if err := syncDir(filepath.Dir(path)); err != nil {
			return nil, nil, 0, err
		}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, 0, err
	}
	records, good := ParseJournal(data)
	if torn = int64(len(data)) - good; torn > 0 {
		if err := f.Truncate(good); err != nil {
			return nil, nil, 0, err
		}
		if err := f.Sync(); err != nil {
			return nil, nil, 0, err
		}
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		return nil, nil, 0, err
	}
	return &Journal{f: f}, records, torn, nil
}

// ParseJournal returns the payloads of the whole records at the start of
// data, and the bytes they take: the first record that is short or fails
// its CRC ends the journal.
func ParseJournal(data []byte) (records [][]byte, good int64) {
	off := 0
	for len(data)-off >= frameHeader {
		n := binary.LittleEndian.Uint32(data[off:])
		sum := binary.LittleEndian.Uint32(data[off+4:])
		if n > maxRecord || int64(n) > int64(len(data)-off-frameHeader) {
			break
		}
		payload := data[off+frameHeader : off+frameHeader+int(n)]
		if crc32.Checksum(payload, castagnoli) != sum {
			break
		}
		records = append(records, payload)
		off += frameHeader + int(n)
	}
	return records, int64(off)
}

// Append writes one record and fsyncs the file: when it returns nil, the
// record survives a crash. After an error the journal's tail is unknown;
// the caller stops, and the next Open drops what was torn.
func (j *Journal) Append(payload []byte) error {
	if len(payload) > maxRecord {
		return fmt.Errorf("journal record of %d bytes exceeds the limit of %d", len(payload), maxRecord)
	}
	buf := make([]byte, frameHeader, frameHeader+len(payload))
	binary.LittleEndian.PutUint32(buf, uint32(len(payload)))
	binary.LittleEndian.PutUint32(buf[4:], crc32.Checksum(payload, castagnoli))
	buf = append(buf, payload...)
	if _, err := j.f.Write(buf); err != nil {
		return err
	}
	return j.f.Sync()
}

// Close closes the file.
func (j *Journal) Close() error { return j.f.Close() }

// syncDir fsyncs a folder, making the names created in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeFileAtomic writes path by way of tmp (in the same folder, or at
// least the same file system): write, fsync, rename, fsync the folder.
// Readers see the old file or the whole new one, never a part.
func writeFileAtomic(path, tmp string, write func(io.Writer) error) error {
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	err = write(w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp) // best effort; the error says what failed
		return err
	}
	return syncDir(filepath.Dir(path))
}
