//! Splits a file into chunks of whole lines, numbered in file order, for parallel decoding.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::Context;

/// A run of consecutive lines.
pub struct Chunk {
    /// Position of the chunk in the file, from 0.
    pub index: u64,
    /// Line number (from 1) of the chunk's first line.
    pub first_line: u64,
    data: Vec<u8>,
}

impl Chunk {
    /// The records of the chunk's lines, each without its `\n` and a `\r` before it.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        let data = self.data.strip_suffix(b"\n").unwrap_or(&self.data);
        data.split(|&byte| byte == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
    }
}

/// Reads a file chunk by chunk.
pub struct ChunkReader {
    file: File,
    /// Bytes read per chunk; the chunk then ends at the last line break in them.
    chunk_bytes: usize,
    carry: Vec<u8>,
    /// Buffers of chunks already processed, reused so that big buffers are not allocated
    /// (and their pages zeroed by the kernel) for every chunk.
    spare: Vec<Vec<u8>>,
    next_index: u64,
    next_line: u64,
    bytes_read: u64,
    at_end: bool,
}

impl ChunkReader {
    /// Opens `path` for reading in chunks of about `chunk_bytes`.
    pub fn open(path: &Path, chunk_bytes: usize) -> anyhow::Result<Self> {
        let file =
            File::open(path).with_context(|| format!("--input {}: cannot open", path.display()))?;
        if file.metadata().is_ok_and(|metadata| metadata.is_dir()) {
            anyhow::bail!(
                "--input {}: is a directory, not a file of events",
                path.display()
            );
        }
        Ok(Self {
            file,
            chunk_bytes: chunk_bytes.max(1),
            carry: Vec::new(),
            spare: Vec::new(),
            next_index: 0,
            next_line: 1,
            bytes_read: 0,
            at_end: false,
        })
    }

    /// The number of chunks handed out so far.
    pub fn chunks_taken(&self) -> u64 {
        self.next_index
    }

    /// Bytes consumed from the file so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Takes back a processed chunk's buffer for reuse.
    pub fn recycle(&mut self, chunk: Chunk) {
        if self.spare.len() < 4 {
            self.spare.push(chunk.data);
        }
    }

    /// Whether every chunk has been handed out.
    pub fn at_end(&self) -> bool {
        self.at_end && self.carry.is_empty()
    }

    /// The next chunk of whole lines, or `None` at the end of the file. A last line
    /// without a line break is a line of its own.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<Chunk>> {
        // The carry is what followed the last line break, so it holds none.
        let mut data = self.spare.pop().unwrap_or_default();
        data.clear();
        data.append(&mut self.carry);
        let mut has_line_break = false;
        while !self.at_end && (data.len() < self.chunk_bytes || !has_line_break) {
            let start = data.len();
            data.reserve(self.chunk_bytes);
            let read = (&mut self.file)
                .take(self.chunk_bytes as u64)
                .read_to_end(&mut data)?;
            self.bytes_read += read as u64;
            has_line_break |= data[start..].contains(&b'\n');
            self.at_end = read == 0;
        }
        if data.is_empty() {
            return Ok(None);
        }
        if !self.at_end {
            let split = data
                .iter()
                .rposition(|&byte| byte == b'\n')
                .map_or(data.len(), |i| i + 1);
            self.carry = data.split_off(split);
        }
        let lines = data.iter().filter(|&&byte| byte == b'\n').count() as u64
            + u64::from(data.last() != Some(&b'\n'));
        let chunk = Chunk {
            index: self.next_index,
            first_line: self.next_line,
            data,
        };
        self.next_index += 1;
        self.next_line += lines;
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small chunks, so that short test files span many of them.
    const CHUNK_BYTES: usize = 4096;

    fn records_of(content: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let path = std::env::temp_dir().join(format!(
            "clickflow-chunks-{}-{}",
            std::process::id(),
            content.len()
        ));
        std::fs::write(&path, content).unwrap();
        let mut reader = ChunkReader::open(&path, CHUNK_BYTES).unwrap();
        let mut records = Vec::new();
        while let Some(chunk) = reader.next_chunk().unwrap() {
            for (offset, record) in chunk.records().enumerate() {
                records.push((chunk.first_line + offset as u64, record.to_vec()));
            }
        }
        std::fs::remove_file(&path).unwrap();
        assert!(reader.at_end());
        records
    }

    #[test]
    fn lines_keep_their_numbers_and_terminators_are_stripped() {
        let records = records_of(b"a\r\n\nb\nc");
        let expected: Vec<(u64, Vec<u8>)> = vec![
            (1, b"a".to_vec()),
            (2, b"".to_vec()),
            (3, b"b".to_vec()),
            (4, b"c".to_vec()),
        ];
        assert_eq!(records, expected);
        assert_eq!(records_of(b"a\n"), vec![(1, b"a".to_vec())]);
        assert!(records_of(b"").is_empty());
    }

    #[test]
    fn lines_longer_than_a_chunk_and_many_chunks_are_whole() {
        let long = vec![b'x'; CHUNK_BYTES * 2 + 3];
        let mut content = Vec::new();
        for i in 0..3 {
            content.extend_from_slice(&long);
            content.extend_from_slice(format!("{i}\n").as_bytes());
        }
        let short: Vec<u8> = (0..200_000)
            .flat_map(|i| format!("line{i}\n").into_bytes())
            .collect();
        content.extend_from_slice(&short);
        let records = records_of(&content);
        assert_eq!(records.len(), 3 + 200_000);
        assert_eq!(records[2].1.len(), long.len() + 1);
        assert_eq!(records[3], (4, b"line0".to_vec()));
        assert_eq!(records.last().unwrap(), &(200_003, b"line199999".to_vec()));
    }
}
