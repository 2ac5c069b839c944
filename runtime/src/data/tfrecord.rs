//! The TFRecord framing: each record is
//! `u64 length (LE) | u32 masked CRC32C of the length bytes | data | u32 masked CRC32C of data`.
//!
//! Readers check both CRCs on every record they return; errors name the file, the record index
//! and its byte offset. [`scan`] reads only the 12-byte headers (and checks the length CRC), so
//! indexing a multi-GB corpus does not read it all; the data CRC is checked when the record is
//! read ([`read_at`]).

use super::{DataError, RecordFault};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const MASK_DELTA: u32 = 0xa282_ead8;
/// Bytes around the data: length (8) + length CRC (4) before, data CRC (4) after.
pub const FRAME_OVERHEAD: u64 = 16;

/// TensorFlow's masked CRC32C: `((crc >> 15) | (crc << 17)) + 0xa282ead8` (wrapping).
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Where one record's data lies in its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPos {
    /// Byte offset of the record's length field.
    pub offset: u64,
    /// Length of the data (without the 16 framing bytes).
    pub len: u64,
}

/// Appends framed records to any writer.
pub struct Writer<W: Write> {
    inner: W,
    records: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(inner: W) -> Self {
        Writer { inner, records: 0 }
    }

    pub fn write_record(&mut self, data: &[u8]) -> std::io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.inner.write_all(&len)?;
        self.inner.write_all(&masked_crc32c(&len).to_le_bytes())?;
        self.inner.write_all(data)?;
        self.inner.write_all(&masked_crc32c(data).to_le_bytes())?;
        self.records += 1;
        Ok(())
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// Frames `data` as one record (for tests and small in-memory files).
pub fn frame(data: &[u8]) -> Vec<u8> {
    let mut w = Writer::new(Vec::with_capacity(data.len() + FRAME_OVERHEAD as usize));
    w.write_record(data).expect("writing to a Vec cannot fail");
    w.into_inner()
}

/// A TFRecord file written through a hidden temporary file in the same directory, fsynced and
/// renamed on [`AtomicFileWriter::finish`], so a crash never leaves a half-written file under the
/// final name. The temporary is one of [`crate::temp_files`], which a directory scan skips.
pub struct AtomicFileWriter {
    writer: Writer<BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
    _registered: crate::temp_files::Registered,
}

impl AtomicFileWriter {
    pub fn create(path: &Path) -> Result<Self, DataError> {
        let tmp = crate::temp_files::sibling(path, crate::temp_files::Kind::New);
        let registered = crate::temp_files::Registered::new(&tmp);
        let file = File::create(&tmp).map_err(|e| DataError::write(path, e))?;
        Ok(AtomicFileWriter {
            writer: Writer::new(BufWriter::new(file)),
            tmp,
            path: path.to_path_buf(),
            _registered: registered,
        })
    }

    pub fn write_record(&mut self, data: &[u8]) -> Result<(), DataError> {
        let r = self.writer.write_record(data);
        r.map_err(|e| DataError::write(&self.path, e))
    }

    pub fn records(&self) -> u64 {
        self.writer.records()
    }

    /// Flushes, fsyncs and renames into place; returns the number of records.
    pub fn finish(mut self) -> Result<u64, DataError> {
        let result = (|| -> std::io::Result<()> {
            let inner = &mut self.writer.inner;
            inner.flush()?;
            inner.get_ref().sync_all()?;
            std::fs::rename(&self.tmp, &self.path)
        })();
        // On failure, Drop removes the temporary file.
        result.map_err(|e| DataError::write(&self.path, e))?;
        Ok(self.writer.records())
    }
}

impl Drop for AtomicFileWriter {
    fn drop(&mut self) {
        // After a successful finish the temporary file has been renamed and this is a no-op.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

fn fault(path: &Path, index: u64, offset: u64, what: RecordFault) -> DataError {
    DataError::Record {
        path: path.to_path_buf(),
        index,
        offset,
        what,
    }
}

/// Checks a 12-byte header (length + its CRC) and returns the data length.
fn parse_header(header: &[u8; 12], path: &Path, index: u64, offset: u64) -> Result<u64, DataError> {
    let len_bytes: [u8; 8] = header[..8].try_into().unwrap();
    let stored = u32::from_le_bytes(header[8..].try_into().unwrap());
    let computed = masked_crc32c(&len_bytes);
    if stored != computed {
        return Err(fault(
            path,
            index,
            offset,
            RecordFault::LengthCrc { stored, computed },
        ));
    }
    Ok(u64::from_le_bytes(len_bytes))
}

/// Reads as many bytes as are available up to `buf.len()`; returns how many were read.
/// Reads and checks the 12-byte header of record `index` at `offset`: its data length and the
/// header bytes, or `None` at a clean end of file.
fn read_header<R: Read>(
    r: &mut R,
    path: &Path,
    index: u64,
    offset: u64,
) -> Result<Option<(u64, [u8; 12])>, DataError> {
    let mut header = [0u8; 12];
    let got = read_full(r, &mut header).map_err(|e| DataError::read(path, e))?;
    if got == 0 {
        return Ok(None);
    }
    if got < 12 {
        let what = RecordFault::Truncated {
            needed: 12,
            available: got as u64,
        };
        return Err(fault(path, index, offset, what));
    }
    parse_header(&header, path, index, offset).map(|len| Some((len, header)))
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The position of every record in `path`, reading only the headers. Checks each length CRC and
/// that the file holds every record completely.
pub fn scan(path: &Path) -> Result<Vec<RecordPos>, DataError> {
    let file = File::open(path).map_err(|e| DataError::read(path, e))?;
    let size = file.metadata().map_err(|e| DataError::read(path, e))?.len();
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut out = Vec::new();
    let mut offset = 0u64;
    while offset < size {
        let index = out.len() as u64;
        let Some((len, _)) = read_header(&mut r, path, index, offset)? else {
            break;
        };
        let available = size - offset - 12;
        if len.checked_add(4).is_none_or(|n| n > available) {
            let what = RecordFault::Truncated {
                needed: len.saturating_add(4),
                available,
            };
            return Err(fault(path, index, offset, what));
        }
        out.push(RecordPos { offset, len });
        r.seek_relative(len as i64 + 4)
            .map_err(|e| DataError::read(path, e))?;
        offset += len + FRAME_OVERHEAD;
    }
    Ok(out)
}

/// Reads the record at `pos` (record number `index` of `path`) with one positioned read and checks
/// both CRCs.
pub fn read_at(file: &File, path: &Path, index: u64, pos: RecordPos) -> Result<Vec<u8>, DataError> {
    let total = pos.len + FRAME_OVERHEAD;
    let total_usize = usize::try_from(total).map_err(|_| {
        fault(
            path,
            index,
            pos.offset,
            RecordFault::TooLarge { len: pos.len },
        )
    })?;
    let mut buf = vec![0u8; total_usize];
    read_exact_at(file, &mut buf, pos.offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            let what = RecordFault::Truncated {
                needed: total,
                available: 0,
            };
            fault(path, index, pos.offset, what)
        } else {
            DataError::read(path, e)
        }
    })?;
    let header: [u8; 12] = buf[..12].try_into().unwrap();
    let len = parse_header(&header, path, index, pos.offset)?;
    if len != pos.len {
        let what = RecordFault::Changed {
            indexed: pos.len,
            now: len,
        };
        return Err(fault(path, index, pos.offset, what));
    }
    check_data(&mut buf, path, index, pos.offset)?;
    Ok(buf)
}

/// Verifies the data CRC of a full frame in `buf` and strips the framing, leaving the data.
fn check_data(buf: &mut Vec<u8>, path: &Path, index: u64, offset: u64) -> Result<(), DataError> {
    let end = buf.len() - 4;
    let stored = u32::from_le_bytes(buf[end..].try_into().unwrap());
    let computed = masked_crc32c(&buf[12..end]);
    if stored != computed {
        return Err(fault(
            path,
            index,
            offset,
            RecordFault::DataCrc { stored, computed },
        ));
    }
    buf.truncate(end);
    buf.drain(..12);
    Ok(())
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    // Positioned reads through a cloned handle (its cursor is shared, so this is not thread-safe
    // on such platforms; the trainer reads from one thread).
    use std::io::Seek;
    let mut f = file.try_clone()?;
    f.seek(std::io::SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

/// Sequential reader over a whole stream, checking both CRCs of every record.
pub struct Reader<R: Read> {
    inner: R,
    path: PathBuf,
    index: u64,
    offset: u64,
}

impl Reader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let f = File::open(path).map_err(|e| DataError::read(path, e))?;
        Ok(Reader::new(BufReader::new(f), path))
    }
}

impl<R: Read> Reader<R> {
    /// `path` names the stream in errors.
    pub fn new(inner: R, path: &Path) -> Self {
        Reader {
            inner,
            path: path.to_path_buf(),
            index: 0,
            offset: 0,
        }
    }

    /// The next record's data, or `None` at a clean end of the stream.
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>, DataError> {
        let (path, index, offset) = (&self.path, self.index, self.offset);
        let Some((len, header)) = read_header(&mut self.inner, path, index, offset)? else {
            return Ok(None);
        };
        let rest = usize::try_from(len + 4)
            .map_err(|_| fault(path, index, offset, RecordFault::TooLarge { len }))?;
        // Grow as data arrives rather than trusting a huge length up front.
        let mut body = Vec::new();
        let got = (&mut self.inner)
            .take(rest as u64)
            .read_to_end(&mut body)
            .map_err(|e| DataError::read(path, e))?;
        if got < rest {
            let what = RecordFault::Truncated {
                needed: rest as u64,
                available: got as u64,
            };
            return Err(fault(path, index, offset, what));
        }
        let mut buf = header.to_vec();
        buf.extend_from_slice(&body);
        check_data(&mut buf, path, index, offset)?;
        self.index += 1;
        self.offset += len + FRAME_OVERHEAD;
        Ok(Some(buf))
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Vec<u8>, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC32C check value from RFC 3720 / the Castagnoli definition.
    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    /// ((0xe3069283 >> 15) | (0xe3069283 << 17)) + 0xa282ead8 mod 2^32, worked out in Python.
    #[test]
    fn mask_of_check_value() {
        assert_eq!(masked_crc32c(b"123456789"), 0xc78a_b0e5);
    }

    #[test]
    fn frame_then_read_back() {
        let mut bytes = frame(b"hello");
        bytes.extend(frame(b""));
        bytes.extend(frame(&[7u8; 300]));
        let got: Vec<_> = Reader::new(&bytes[..], Path::new("mem"))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got, vec![b"hello".to_vec(), vec![], vec![7u8; 300]]);
    }

    #[test]
    fn reader_reports_index_and_offset_of_bad_data_crc() {
        let mut bytes = frame(b"first");
        let second_at = bytes.len();
        bytes.extend(frame(b"second"));
        bytes[second_at + 12] ^= 1;
        let mut r = Reader::new(&bytes[..], Path::new("x.tfrecord"));
        assert!(r.next_record().unwrap().is_some());
        let e = r.next_record().unwrap_err().to_string();
        assert!(e.contains("x.tfrecord"), "{e}");
        assert!(e.contains("record 1"), "{e}");
        assert!(e.contains(&format!("byte {second_at}")), "{e}");
        assert!(e.contains("data CRC"), "{e}");
    }
}
