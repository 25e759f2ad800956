//! The framing of every record a meta node keeps on disk: Raft log entries in
//! the segment log, its state values (vote, purged and committed ids), the
//! same in a legacy `raft.redb`, and the snapshot file (docs/formats.md).
//!
//! A record is a fixed 20-byte header followed by the body:
//!
//! ```text
//! offset  size  field
//!      0     4  magic: which kind of record (log entry, state value, snapshot)
//!      4     2  format number, little endian (FORMAT_CURRENT when written)
//!      6     2  reserved, 0
//!      8     8  body length in bytes, little endian
//!     16     4  CRC32C of bytes 0..16 and of the body, little endian
//!     20     -  body: the value in postcard (formats 1 and 2)
//! ```
//!
//! Format 2 added one field, `xattrs`, at the end of an inode's record
//! (`fsm::inode_wire`). A format-1 body has no bytes for it, and postcard
//! cannot tell (it is not self-describing), so [`decode`] records the
//! format of the body it decodes and [`since_format_2`] reads that field as
//! empty in an older body. Log entries hold no inode (new commands were
//! added at the end of their enum, which keeps every older entry's variant
//! numbers), so their bodies are the same in both formats.
//!
//! Format 3 added the POSIX attributes at the end of the inode (`uid`, `gid`,
//! `atime_ns`, `mtime_ns`, `ctime_ns`, a symbolic link's `target`), read the same way through
//! [`since_format_3`]: an older inode decodes as owned by root with its times
//! taken from `mtime_ms`. The commands format 3 added come after every older
//! variant of their enum.
//!
//! Format 4 added hard links and special files at the end of the inode
//! (`extra_links`, the directories holding its other names; `rdev`, a device
//! file's device number), read through [`since_format_4`]: an older inode
//! decodes with one name and no device. `Kind` gained `Fifo`, `Socket`,
//! `CharDevice` and `BlockDevice` after its older variants, and the commands
//! format 4 added (`Mknod`, `Link`) come after every older variant of theirs.
//! Format 4 also added commands that add no inode field: `Command::Batch` (group
//! commit) and `WriteCmd::CreatePrepared`, each after every older variant of
//! its enum, with the answers `Response::Batch` and `Response::Created`.
//!
//! Format 5 added one command and no field: `NamespaceCmd::Exchange`
//! (renameat2's `RENAME_EXCHANGE`), after every older variant of its enum,
//! so every older body decodes unchanged.
//!
//! Format 6 added byte-range (POSIX record) locks: one field at the end of
//! the state, `FsState::ranges`, read through [`since_format_6`] (an older
//! state has none), the commands `LockCmd::AcquireRange`, `ReleaseRange`
//! and `CancelRange`, the answer `Response::Range`, the error
//! `FsError::TooManyLocks` and `NamespaceCmd::RemoveKind` (unlink and
//! rmdir, the kind checked as the remove applies), each after every older
//! variant of its enum.
//!
//! Format 7 added files written before they are created (one Raft entry per
//! small file): one field at the end of the state, `FsState::reserved`, read
//! through [`since_format_7`], the commands `WriteCmd::ReserveChunkIds`,
//! `WriteCmd::CreateWritten` and `WriteCmd::ExpireReservations`, and the answer `Response::Reserved`, each after
//! every older variant of its enum.
//!
//! Format 8 added one error and no field: `FsError::Deadlock` (a byte-range
//! wait that would close a cycle, under rules 7), after every older variant
//! of its enum, so every older body decodes unchanged.
//!
//! Format 9 added no field and no variant: its log entries may carry rules
//! 8 (`fsm::Proposal::rules`), under which a namespace command's path
//! `/.shoal-inode/N/rest` names `rest` under inode N (`/.shoal-inode/N`,
//! inode N itself). An older build would apply such an entry to
//! the path literally, so it must refuse the record, and does: it is newer.
//!
//! Format 10 added no field and no variant either: its log entries may
//! carry rules 9, under which a command that would make one of the root's
//! reserved names (`.shoal-inode`, and names that start with
//! `.shoal-unlinked.` unless a mount hides a file so), or put another
//! inode under a mount's hidden name, or exchange one, is refused. An
//! older build would apply it, so it refuses the record as newer.
//!
//! Format 11 added no field and no variant either: its log entries may
//! carry rules 10, under which a truncating commit that shrinks a file to
//! within a chunk holding committed bytes, without listing that chunk, is
//! refused. An older build would apply it, so it refuses the record as
//! newer.
//!
//! The header's layout is fixed for every format, so a reader checks the CRC
//! before it looks at the format number: a flipped bit anywhere is reported as
//! corruption, never as a format it does not know, and never decoded. Only a
//! record whose CRC holds and whose format is newer than [`FORMAT_CURRENT`] is
//! refused as newer.
//!
//! Records written before this framing existed (format 0) are plain JSON. Every
//! magic starts with the byte 0xC5, which no JSON text starts with, so a record
//! is either headed, or legacy JSON (starting with `{`, `[` or `null`), or
//! corrupt. Legacy JSON goes through one upgrade hook per record kind
//! ([`upgrade_legacy_entry_json`], [`upgrade_legacy_snapshot_body_json`])
//! before it is decoded into today's types.
//!
//! Nothing here knows Shoal's commands: the bodies are any `Serialize` /
//! `DeserializeOwned` type.

use std::cell::Cell;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

thread_local! {
    /// The format of the body [`decode`] is decoding on this thread; the
    /// current format everywhere else (JSON on the wire, new records).
    static DECODING_FORMAT: Cell<u16> = const { Cell::new(FORMAT_CURRENT) };
}

/// Sets [`DECODING_FORMAT`] for its lifetime, and puts back the old value
/// when dropped (also when decoding panics).
struct DecodingFormat(u16);

impl DecodingFormat {
    fn enter(format: u16) -> Self {
        DecodingFormat(DECODING_FORMAT.with(|f| f.replace(format)))
    }
}

impl Drop for DecodingFormat {
    fn drop(&mut self) {
        DECODING_FORMAT.with(|f| f.set(self.0));
    }
}

/// Deserializes a field that format 2 added: in a body of an older format it
/// is not there, so nothing is read and the field is its default.
pub fn since_format_2<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    if DECODING_FORMAT.with(Cell::get) < FORMAT_XATTRS {
        return Ok(T::default());
    }
    T::deserialize(d)
}

/// Deserializes a field that format 3 added (the POSIX attributes of an
/// inode): in a body of an older format it is not there, so nothing is read
/// and the field is its default.
pub fn since_format_3<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    if DECODING_FORMAT.with(Cell::get) < FORMAT_POSIX {
        return Ok(T::default());
    }
    T::deserialize(d)
}

/// Deserializes a field that format 4 added (hard links, device numbers):
/// in a body of an older format it is not there, so nothing is read and the
/// field is its default.
pub fn since_format_4<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    if DECODING_FORMAT.with(Cell::get) < FORMAT_LINKS {
        return Ok(T::default());
    }
    T::deserialize(d)
}

/// Deserializes a field that format 6 added (byte-range locks): in a body
/// of an older format it is not there, so nothing is read and the field is
/// its default.
pub fn since_format_6<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    if DECODING_FORMAT.with(Cell::get) < FORMAT_RANGES {
        return Ok(T::default());
    }
    T::deserialize(d)
}

/// Deserializes a field that format 7 added (reserved chunk ids): in a body
/// of an older format it is not there, so nothing is read and the field is
/// its default.
pub fn since_format_7<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    if DECODING_FORMAT.with(Cell::get) < FORMAT_RESERVED {
        return Ok(T::default());
    }
    T::deserialize(d)
}

/// The format this build writes, and the newest it reads.
pub const FORMAT_CURRENT: u16 = 11;
/// The format that added reserved chunk ids to the state.
pub const FORMAT_RESERVED: u16 = 7;
/// The format that added byte-range locks to the state.
pub const FORMAT_RANGES: u16 = 6;
/// The format that added extended attributes to inodes.
pub const FORMAT_XATTRS: u16 = 2;
/// The format that added POSIX attributes to inodes (owner, group, times in
/// nanoseconds).
pub const FORMAT_POSIX: u16 = 3;
/// The format that added hard links and special files to inodes.
pub const FORMAT_LINKS: u16 = 4;
/// Records without a header: plain JSON, as written before formats had numbers.
pub const FORMAT_LEGACY_JSON: u16 = 0;
/// Length of the header before the body.
pub const HEADER_BYTES: usize = 20;

/// The kinds of headed records; each has its own magic so that a record read
/// from the wrong place is reported rather than decoded as something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A value of the `log` table: one openraft entry.
    LogEntry,
    /// A value of the `state` table: the vote, last purged or committed log id.
    StateValue,
    /// The snapshot file (and the bytes a leader sends to install a snapshot).
    Snapshot,
}

impl RecordKind {
    pub const fn magic(self) -> [u8; 4] {
        match self {
            RecordKind::LogEntry => [0xC5, b'L', b'O', b'G'],
            RecordKind::StateValue => [0xC5, b'S', b'T', b'A'],
            RecordKind::Snapshot => [0xC5, b'S', b'N', b'P'],
        }
    }

    fn name(self) -> &'static str {
        match self {
            RecordKind::LogEntry => "log entry",
            RecordKind::StateValue => "state value",
            RecordKind::Snapshot => "snapshot",
        }
    }
}

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Written by a newer Shoal; this build must not touch it.
    #[error("format {found} is newer than this build of shoal reads (up to {known}); run a newer shoal")]
    Newer { found: u16, known: u16 },
    /// The bytes are damaged: nothing in them can be trusted.
    #[error("corrupt {kind}: {reason}")]
    Corrupt { kind: &'static str, reason: Corruption },
    /// The header and checksum hold but the body does not decode as the
    /// expected type: a bug, or a format number reused for another layout.
    #[error("{kind} (format {format}) does not decode: {source}")]
    Body { kind: &'static str, format: u16, source: postcard::Error },
    /// A legacy (JSON) record that does not decode.
    #[error("legacy JSON {kind} does not decode: {source}")]
    LegacyJson { kind: &'static str, source: serde_json::Error },
    /// The value could not be encoded (a type that postcard cannot represent).
    #[error("encoding a {kind}: {source}")]
    Encode { kind: &'static str, source: postcard::Error },
}

/// How a record is damaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("{len} bytes are too short for anything")]
    TooShort { len: usize },
    #[error("starts with {found:02x?}, neither a Shoal header nor JSON")]
    BadMagic { found: [u8; 4] },
    #[error("CRC32C mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("the header says {header} body bytes, {found} follow it")]
    LengthMismatch { header: u64, found: u64 },
    #[error("the reserved header field is {found:#06x}, not 0")]
    Reserved { found: u16 },
    #[error("{extra} bytes follow the body's value")]
    TrailingBytes { extra: usize },
}

impl FormatError {
    fn corrupt(kind: RecordKind, reason: Corruption) -> Self {
        FormatError::Corrupt { kind: kind.name(), reason }
    }

    /// True for damaged bytes (as opposed to a newer format or a decoding bug).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, FormatError::Corrupt { .. })
    }
}

/// A record's checked header: its format and its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked<'a> {
    /// A headed record of a known format whose CRC holds.
    Headed { format: u16, body: &'a [u8] },
    /// Unheaded JSON (format 0).
    LegacyJson(&'a [u8]),
}

/// Encodes `value` as a headed record of the current format.
pub fn encode<T: Serialize>(kind: RecordKind, value: &T) -> Result<Vec<u8>, FormatError> {
    let mut out = vec![0u8; HEADER_BYTES];
    let mut out = postcard::to_extend(value, std::mem::take(&mut out))
        .map_err(|source| FormatError::Encode { kind: kind.name(), source })?;
    let body = &out[HEADER_BYTES..];
    let head = header(kind, body.len() as u64, shoal_core::checksum::crc32c(body));
    out[..HEADER_BYTES].copy_from_slice(&head);
    debug_assert!(check(kind, &out).is_ok(), "a fresh record must check");
    Ok(out)
}

/// Bytes of a record [`encode_to_file`] hands the disk at a time.
/// 1 MiB: with three meta nodes writing snapshots on one disk at once, an
/// fsync beside them waited up to 92-140 ms with no pacing, 27-34 ms with
/// pieces of 8 MiB and 11-12 ms with pieces of 1 MiB.
const WRITEBACK_PIECE: u64 = 1 << 20;

/// The header of a record of `kind` in the current format whose body is
/// `body_len` bytes with the CRC32C `body_crc`.
fn header(kind: RecordKind, body_len: u64, body_crc: u32) -> [u8; HEADER_BYTES] {
    use shoal_core::checksum::{crc32c, crc32c_combine};
    let mut head = [0u8; HEADER_BYTES];
    head[0..4].copy_from_slice(&kind.magic());
    head[4..6].copy_from_slice(&FORMAT_CURRENT.to_le_bytes());
    head[8..16].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32c_combine(crc32c(&head[..16]), body_crc, body_len);
    head[16..20].copy_from_slice(&crc.to_le_bytes());
    head
}

/// Writes `value` as a headed record of the current format to the start of
/// `file` (an empty file, opened for writing), without holding the encoding
/// in memory: the body goes out through a buffer as it is encoded, its CRC
/// and length counted on the way, and is handed to the disk a piece at a
/// time; the header is written last, at offset 0. The bytes are exactly
/// [`encode`]'s. Returns how many were written. A failed write (a full
/// disk) is its own error, not an encoding one; the file is then not a
/// record (its header is zeros), and the caller removes it.
pub fn encode_to_file<T: Serialize>(kind: RecordKind, value: &T, file: &std::fs::File) -> std::io::Result<u64> {
    use std::io::{Seek as _, Write as _};
    use std::os::unix::fs::FileExt as _;

    use shoal_core::checksum::{crc32c, crc32c_combine};

    /// The body on its way to the file, behind a buffer (so it sees large
    /// pieces): counted, checksummed, and the first write error kept
    /// (postcard reports any as a full buffer).
    struct Body<'a> {
        file: &'a std::fs::File,
        crc: u32,
        len: u64,
        failed: Option<std::io::Error>,
        /// The file's bytes below this were handed to the disk...
        started: u64,
        /// ...and below this are on it.
        done: u64,
    }
    impl Body<'_> {
        /// Hands the disk what was written since the last piece once there
        /// are [`WRITEBACK_PIECE`] bytes of it, after waiting for the piece
        /// before. So a big record leaves at most two pieces for the disk
        /// at once, instead of hundreds of MiB that other files' fsyncs (the
        /// Raft log's) would queue behind. The caller's fsync makes the file
        /// durable; an error here is kept all the same, since waiting on a
        /// range reports (and so clears) a write error the fsync would
        /// otherwise have seen. A file system without the call is not paced.
        fn pace(&mut self) {
            let end = HEADER_BYTES as u64 + self.len;
            if end - self.started < WRITEBACK_PIECE {
                return;
            }
            #[cfg(target_os = "linux")]
            {
                use std::os::fd::AsRawFd as _;
                let fd = self.file.as_raw_fd();
                let sync = |from: u64, to: u64, flags: libc::c_uint| {
                    // SAFETY: sync_file_range only starts or waits for the
                    // writeback of this open file's pages.
                    let r = unsafe { libc::sync_file_range(fd, from as i64, (to - from) as i64, flags) };
                    let e = std::io::Error::last_os_error();
                    match e.raw_os_error() {
                        _ if r == 0 => None,
                        Some(libc::EINVAL | libc::ESPIPE | libc::ENOSYS | libc::EOPNOTSUPP) => None,
                        _ => Some(e),
                    }
                };
                let wait =
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
                let failed = (self.done < self.started)
                    .then(|| sync(self.done, self.started, wait))
                    .flatten()
                    .or_else(|| sync(self.started, end, libc::SYNC_FILE_RANGE_WRITE));
                if let Some(e) = failed {
                    self.failed.get_or_insert(e);
                }
            }
            self.done = self.started;
            self.started = end;
        }
    }
    impl std::io::Write for Body<'_> {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let n = self.file.write(bytes).inspect_err(|e| {
                // An interrupted write is retried by the caller.
                if e.kind() != std::io::ErrorKind::Interrupted {
                    let kept = e.raw_os_error().map_or_else(
                        || std::io::Error::new(e.kind(), e.to_string()),
                        std::io::Error::from_raw_os_error,
                    );
                    self.failed.get_or_insert(kept);
                }
            })?;
            self.crc = crc32c_combine(self.crc, crc32c(&bytes[..n]), n as u64);
            self.len += n as u64;
            self.pace();
            match &self.failed {
                Some(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                None => Ok(n),
            }
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    // The header's room is left as a hole, filled last.
    (&*file).seek(std::io::SeekFrom::Start(HEADER_BYTES as u64))?;
    let body = Body { file, crc: crc32c(&[]), len: 0, failed: None, started: 0, done: 0 };
    // One piece per buffer: each full buffer written is one piece paced.
    let mut out = std::io::BufWriter::with_capacity(WRITEBACK_PIECE as usize, body);
    let encoded = postcard::to_io(value, &mut out).map(drop);
    let flushed = out.flush();
    let (body, _unwritten) = out.into_parts();
    if let Some(e) = body.failed {
        return Err(e);
    }
    encoded.map_err(|source| std::io::Error::other(FormatError::Encode { kind: kind.name(), source }))?;
    flushed?;
    file.write_all_at(&header(kind, body.len, body.crc), 0)?;
    Ok(HEADER_BYTES as u64 + body.len)
}

fn record_crc(header: &[u8], body: &[u8]) -> u32 {
    shoal_core::checksum::crc32c_parts(&[header, body])
}

/// True when `bytes` start like JSON text (after optional whitespace).
fn looks_like_json(bytes: &[u8]) -> bool {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    matches!(first, Some(b'{' | b'[' | b'n'))
}

/// Checks a record's header and CRC without decoding its body.
pub fn check(kind: RecordKind, bytes: &[u8]) -> Result<Checked<'_>, FormatError> {
    if bytes.first() != Some(&kind.magic()[0]) {
        if looks_like_json(bytes) {
            return Ok(Checked::LegacyJson(bytes));
        }
        if bytes.len() < 4 {
            return Err(FormatError::corrupt(kind, Corruption::TooShort { len: bytes.len() }));
        }
        let found = bytes[..4].try_into().expect("four bytes");
        return Err(FormatError::corrupt(kind, Corruption::BadMagic { found }));
    }
    if bytes.len() < HEADER_BYTES {
        return Err(FormatError::corrupt(kind, Corruption::TooShort { len: bytes.len() }));
    }
    let (header, body) = bytes.split_at(HEADER_BYTES);
    let stored = u32::from_le_bytes(header[16..20].try_into().expect("four bytes"));
    let computed = record_crc(&header[..16], body);
    if stored != computed {
        return Err(FormatError::corrupt(kind, Corruption::CrcMismatch { stored, computed }));
    }
    // The CRC holds, so the header is as written: a wrong magic is a record of
    // another kind, stored in the wrong place.
    if header[0..4] != kind.magic() {
        let found = header[0..4].try_into().expect("four bytes");
        return Err(FormatError::corrupt(kind, Corruption::BadMagic { found }));
    }
    let format = u16::from_le_bytes(header[4..6].try_into().expect("two bytes"));
    if format > FORMAT_CURRENT {
        return Err(FormatError::Newer { found: format, known: FORMAT_CURRENT });
    }
    let reserved = u16::from_le_bytes(header[6..8].try_into().expect("two bytes"));
    if reserved != 0 {
        return Err(FormatError::corrupt(kind, Corruption::Reserved { found: reserved }));
    }
    let len = u64::from_le_bytes(header[8..16].try_into().expect("eight bytes"));
    if len != body.len() as u64 {
        return Err(FormatError::corrupt(kind, Corruption::LengthMismatch { header: len, found: body.len() as u64 }));
    }
    Ok(Checked::Headed { format, body })
}

/// Decodes a record of `kind`: a headed one of a known format, or legacy JSON
/// passed through `upgrade_legacy` first.
pub fn decode<T: DeserializeOwned>(
    kind: RecordKind,
    bytes: &[u8],
    upgrade_legacy: fn(serde_json::Value) -> serde_json::Value,
) -> Result<T, FormatError> {
    match check(kind, bytes)? {
        Checked::Headed { format, body } => {
            let _format = DecodingFormat::enter(format);
            let (value, rest) = postcard::take_from_bytes::<T>(body).map_err(|source| FormatError::Body {
                kind: kind.name(),
                format,
                source,
            })?;
            if !rest.is_empty() {
                return Err(FormatError::corrupt(kind, Corruption::TrailingBytes { extra: rest.len() }));
            }
            Ok(value)
        }
        Checked::LegacyJson(json) => {
            let legacy = |source| FormatError::LegacyJson { kind: kind.name(), source };
            let v: serde_json::Value = serde_json::from_slice(json).map_err(legacy)?;
            serde_json::from_value(upgrade_legacy(v)).map_err(legacy)
        }
    }
}

/// Translates one legacy (format 0, JSON) Raft log entry into today's JSON
/// shape of `openraft::Entry<TypeConfig>`, before it is decoded.
///
/// Format 0 had one flat `Command` enum; today each command belongs to a
/// domain (`Command::Namespace(NamespaceCmd::Mkdir {..})`), so an old
/// entry's `payload.Normal.cmd`, `{"Mkdir": {..}}`, becomes
/// `{"Namespace": {"Mkdir": {..}}}`. Fields added since (a rename's fence)
/// take their serde defaults. Anything else is left as it is, and fails to
/// decode if it is not an entry.
pub fn upgrade_legacy_entry_json(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(cmd) = v.pointer_mut("/payload/Normal/cmd") {
        *cmd = upgrade_legacy_command_json(cmd.take());
    }
    v
}

/// Nests a format-0 command under its domain (see [`upgrade_legacy_entry_json`]).
fn upgrade_legacy_command_json(cmd: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::Object(map) = &cmd else { return cmd };
    let Some(variant) = map.keys().next().filter(|_| map.len() == 1) else { return cmd };
    let domain = match variant.as_str() {
        "Mkdir" | "Create" | "Remove" | "Rename" => "Namespace",
        "PrepareWrite" | "CommitWrite" => "Write",
        "AddReplica" | "DropReplicas" | "Reconcile" | "ReportCorrupt" | "SetReplication" => "Replicas",
        "RegisterNode" | "ForgetGarbage" | "SetDraining" | "SetRepairPaused" => "Nodes",
        "OpenSession" | "EndSession" | "Acquire" | "Release" => "Locks",
        // Already nested (or not a command): left for the decoder to judge.
        _ => return cmd,
    };
    serde_json::json!({ domain: cmd })
}

/// Translates a legacy (format 0, JSON) snapshot body (`SmBody`: `last_applied`,
/// `last_membership`, `fs`) into today's JSON shape, before it is decoded.
///
/// The identity for now; when `FsState` (or the `Response`s it keeps for
/// request deduplication) changes shape, the old `fs` is rewritten here.
pub fn upgrade_legacy_snapshot_body_json(v: serde_json::Value) -> serde_json::Value {
    v
}

/// For `state` values (openraft's vote and log ids): their JSON shape is
/// openraft's own, which Shoal does not change.
pub fn legacy_state_json(v: serde_json::Value) -> serde_json::Value {
    v
}

/// Rewrites a record's format number and fixes its CRC, as a newer Shoal
/// would have written it (for tests of the refusal).
#[cfg(test)]
pub(crate) fn with_format(mut bytes: Vec<u8>, format: u16) -> Vec<u8> {
    bytes[4..6].copy_from_slice(&format.to_le_bytes());
    let crc = record_crc(&bytes[..16], &bytes[HEADER_BYTES..]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, StoredMembership, Vote};
    use shoal_core::NormalPath;

    use super::*;
    use crate::TypeConfig;
    use crate::fsm::{Fence, Proposal, RequestId, WriteCmd};

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entries() -> Vec<Entry<TypeConfig>> {
        let nodes = BTreeMap::from([(1, BasicNode::new("127.0.0.1:1")), (2, BasicNode::new("127.0.0.1:2"))]);
        let membership = Membership::new(vec![BTreeSet::from([1, 2])], nodes);
        let cmd = WriteCmd::PrepareWrite {
            inode: 7,
            index: 3,
            expect_id: Some(9),
            expect_version: 4,
            replicas: vec![1, 2],
            fence: Some(Fence { path: NormalPath::parse("/a/b").unwrap(), token: 12 }),
        };
        let request = Some(RequestId { client: u64::MAX, seq: 5, done_below: 2 });
        vec![
            Entry { log_id: log_id(1, 1), payload: EntryPayload::Blank },
            Entry { log_id: log_id(1, 2), payload: EntryPayload::Membership(membership) },
            Entry { log_id: log_id(2, 3), payload: EntryPayload::Normal(Proposal::new(1, request, cmd)) },
        ]
    }

    fn no_upgrade(v: serde_json::Value) -> serde_json::Value {
        v
    }

    #[test]
    fn openraft_types_round_trip() {
        for e in entries() {
            let bytes = encode(RecordKind::LogEntry, &e).unwrap();
            let back: Entry<TypeConfig> = decode(RecordKind::LogEntry, &bytes, no_upgrade).unwrap();
            assert_eq!(back, e);
        }
        let vote = Vote::new_committed(3, 2);
        let back: Vote<u64> =
            decode(RecordKind::StateValue, &encode(RecordKind::StateValue, &vote).unwrap(), no_upgrade).unwrap();
        assert_eq!(back, vote);
        for committed in [None, Some(log_id(4, 99))] {
            let bytes = encode(RecordKind::StateValue, &committed).unwrap();
            let back: Option<LogId<u64>> = decode(RecordKind::StateValue, &bytes, no_upgrade).unwrap();
            assert_eq!(back, committed);
        }
        let EntryPayload::Membership(m) = entries()[1].payload.clone() else { unreachable!() };
        let stored = StoredMembership::new(Some(log_id(1, 2)), m);
        let back: StoredMembership<u64, BasicNode> =
            decode(RecordKind::Snapshot, &encode(RecordKind::Snapshot, &stored).unwrap(), no_upgrade).unwrap();
        assert_eq!(back, stored);
    }

    /// A record written piece by piece to a file is byte for byte the one
    /// `encode` makes, for a value larger than the write buffer (so its CRC
    /// is combined from pieces) and for small ones; a full disk is reported
    /// as such, not as an encoding error.
    #[test]
    fn a_record_streamed_to_a_file_is_the_encoded_one() {
        let big: BTreeMap<u64, String> =
            (0..40_000u64).map(|i| (i, format!("value {i} {}", "x".repeat(i as usize % 50)))).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        let check_same = |value: &dyn Fn(&std::fs::File) -> std::io::Result<u64>, expected: Vec<u8>| {
            let f = std::fs::File::create(&path).unwrap();
            assert_eq!(value(&f).unwrap(), expected.len() as u64);
            assert_eq!(std::fs::read(&path).unwrap(), expected);
        };
        assert!(encode(RecordKind::Snapshot, &big).unwrap().len() > 1 << 20, "crosses the buffer");
        check_same(&|f| encode_to_file(RecordKind::Snapshot, &big, f), encode(RecordKind::Snapshot, &big).unwrap());
        for e in entries() {
            check_same(&|f| encode_to_file(RecordKind::LogEntry, &e, f), encode(RecordKind::LogEntry, &e).unwrap());
        }
        check_same(&|f| encode_to_file(RecordKind::StateValue, &(), f), encode(RecordKind::StateValue, &()).unwrap());
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let err = encode_to_file(RecordKind::Snapshot, &big, &full).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    }

    #[test]
    fn legacy_json_is_read_through_the_hook() {
        for e in entries() {
            let json = serde_json::to_vec(&e).unwrap();
            let back: Entry<TypeConfig> = decode(RecordKind::LogEntry, &json, upgrade_legacy_entry_json).unwrap();
            assert_eq!(back, e);
        }
        // `committed` was stored as JSON `null` when there was none.
        let none: Option<LogId<u64>> = decode(RecordKind::StateValue, b"null", legacy_state_json).unwrap();
        assert_eq!(none, None);
        // The hook is what is decoded.
        fn to_blank(mut v: serde_json::Value) -> serde_json::Value {
            v["payload"] = serde_json::json!("Blank");
            v
        }
        let json = serde_json::to_vec(&entries()[2]).unwrap();
        let back: Entry<TypeConfig> = decode(RecordKind::LogEntry, &json, to_blank).unwrap();
        assert_eq!(back.payload, EntryPayload::Blank);
    }

    #[test]
    fn every_flipped_bit_is_corruption() {
        let bytes = encode(RecordKind::LogEntry, &entries()[2]).unwrap();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                let err = decode::<Entry<TypeConfig>>(RecordKind::LogEntry, &bad, no_upgrade).unwrap_err();
                assert!(err.is_corrupt(), "byte {i} bit {bit}: {err}");
            }
        }
        // Cut short anywhere.
        for len in 0..bytes.len() {
            let err = decode::<Entry<TypeConfig>>(RecordKind::LogEntry, &bytes[..len], no_upgrade).unwrap_err();
            assert!(err.is_corrupt(), "cut at {len}: {err}");
        }
    }

    #[test]
    fn a_record_of_another_kind_is_refused() {
        let bytes = encode(RecordKind::StateValue, &Some(log_id(1, 1))).unwrap();
        let err = decode::<Option<LogId<u64>>>(RecordKind::LogEntry, &bytes, no_upgrade).unwrap_err();
        assert!(err.is_corrupt(), "{err}");
    }

    #[test]
    fn a_newer_format_is_refused_with_both_versions() {
        let bytes = with_format(encode(RecordKind::Snapshot, &entries()[0]).unwrap(), FORMAT_CURRENT + 1);
        let err = decode::<Entry<TypeConfig>>(RecordKind::Snapshot, &bytes, no_upgrade).unwrap_err();
        assert!(matches!(err, FormatError::Newer { found: 12, known: 11 }), "{err:?}");
        assert_eq!(err.to_string(), "format 12 is newer than this build of shoal reads (up to 11); run a newer shoal");
    }

    #[test]
    fn garbage_is_neither_headed_nor_json() {
        for bad in [&b""[..], b"\x00", b"\x00\x00\x00\x00\x00", b"SHOAL"] {
            let err = check(RecordKind::Snapshot, bad).unwrap_err();
            assert!(err.is_corrupt(), "{bad:?}: {err}");
        }
        // JSON that does not decode is a decoding error, not a success.
        let err = decode::<Entry<TypeConfig>>(RecordKind::LogEntry, b"{\"x\":1}", no_upgrade).unwrap_err();
        assert!(matches!(err, FormatError::LegacyJson { .. }), "{err}");
    }

    /// An inode as format 1 wrote it: every field but `xattrs`.
    #[derive(serde::Serialize)]
    struct InodeV1 {
        id: u64,
        parent: u64,
        kind: crate::fsm::Kind,
        size: u64,
        mode: u32,
        mtime_ms: u64,
        replication: u32,
        chunk_size: u64,
        chunks: BTreeMap<u64, crate::fsm::ChunkMeta>,
        children: BTreeMap<String, u64>,
        fence: u64,
    }

    /// A format-1 body (here inodes inside a response, as in the snapshot's
    /// request answers) decodes with empty attributes; format 2 keeps them.
    #[test]
    fn format_1_inodes_decode_without_attributes() {
        use crate::fsm::{Inode, Kind, Response};
        let v1 = |id| InodeV1 {
            id,
            parent: 1,
            kind: Kind::File,
            size: 5,
            mode: 0o644,
            mtime_ms: 9,
            replication: 2,
            chunk_size: 100,
            chunks: Default::default(),
            children: BTreeMap::from([("x".to_string(), 3)]),
            fence: 4,
        };
        #[derive(serde::Serialize)]
        enum ResponseV1 {
            #[allow(dead_code)]
            Ok,
            Inode(InodeV1),
        }
        let old = (vec![v1(2), v1(3)], ResponseV1::Inode(v1(4)), 77u64);
        let mut bytes = encode(RecordKind::Snapshot, &old).unwrap();
        bytes = with_format(bytes, 1);
        let (inodes, resp, tail): (Vec<Inode>, Response, u64) =
            decode(RecordKind::Snapshot, &bytes, no_upgrade).unwrap();
        assert_eq!(tail, 77, "the fields after the inodes line up");
        assert_eq!(inodes.len(), 2);
        assert!(inodes.iter().all(|i| i.extra.xattrs.is_empty() && i.fence == 4 && i.children.len() == 1));
        let Response::Inode(i) = resp else { panic!("{resp:?}") };
        assert_eq!(i.id, 4);
        // Format 2 carries them.
        let mut new = inodes[0].clone();
        new.extra.xattrs.insert("user.a".into(), b"1".to_vec());
        let back: Inode =
            decode(RecordKind::Snapshot, &encode(RecordKind::Snapshot, &new).unwrap(), no_upgrade).unwrap();
        assert_eq!(back, new);
        // JSON (the Raft RPCs, legacy records) reads them too, or their absence.
        let json = serde_json::to_string(&new).unwrap();
        assert_eq!(serde_json::from_str::<Inode>(&json).unwrap(), new);
    }

    /// A format-2 inode (every field up to `xattrs`) decodes owned by root,
    /// with its times taken from `mtime_ms`; format 3 keeps the new fields.
    #[test]
    fn format_2_inodes_decode_with_default_posix_attributes() {
        use crate::fsm::{Inode, Kind};
        #[derive(serde::Serialize)]
        struct InodeV2 {
            v1: InodeV1,
            xattrs: BTreeMap<String, Vec<u8>>,
        }
        let old = InodeV2 {
            v1: InodeV1 {
                id: 2,
                parent: 1,
                kind: Kind::File,
                size: 5,
                mode: 0o640,
                mtime_ms: 9,
                replication: 2,
                chunk_size: 100,
                chunks: Default::default(),
                children: Default::default(),
                fence: 4,
            },
            xattrs: BTreeMap::from([("user.a".to_string(), b"1".to_vec())]),
        };
        let bytes = with_format(encode(RecordKind::Snapshot, &(old, 77u64)).unwrap(), 2);
        let (i, tail): (Inode, u64) = decode(RecordKind::Snapshot, &bytes, no_upgrade).unwrap();
        assert_eq!(tail, 77, "the fields after the inode line up");
        assert_eq!((i.uid, i.gid, i.mode, i.extra.xattrs.len()), (0, 0, 0o640, 1));
        assert_eq!(i.times_ns(), (9_000_000, 9_000_000, 9_000_000));
        let mut new = i.clone();
        (new.uid, new.gid, new.atime_ns, new.mtime_ns, new.ctime_ns) = (1000, 100, 1, 2, 3);
        let back: Inode =
            decode(RecordKind::Snapshot, &encode(RecordKind::Snapshot, &new).unwrap(), no_upgrade).unwrap();
        assert_eq!(back, new);
        assert_eq!(back.times_ns(), (1, 2, 3));
    }

    /// A format-3 inode (every field up to `target`) decodes with one name
    /// and no device number; format 4 keeps hard links and devices.
    #[test]
    fn format_3_inodes_decode_with_one_name() {
        use crate::fsm::{Inode, Kind};
        #[derive(serde::Serialize)]
        struct InodeV3 {
            v1: InodeV1,
            xattrs: BTreeMap<String, Vec<u8>>,
            uid: u32,
            gid: u32,
            atime_ns: u64,
            mtime_ns: u64,
            ctime_ns: u64,
            target: String,
        }
        let old = InodeV3 {
            v1: InodeV1 {
                id: 2,
                parent: 1,
                kind: Kind::File,
                size: 5,
                mode: 0o640,
                mtime_ms: 9,
                replication: 2,
                chunk_size: 100,
                chunks: Default::default(),
                children: Default::default(),
                fence: 4,
            },
            xattrs: Default::default(),
            uid: 1000,
            gid: 100,
            atime_ns: 1,
            mtime_ns: 2,
            ctime_ns: 3,
            target: Default::default(),
        };
        let bytes = with_format(encode(RecordKind::Snapshot, &(old, 77u64)).unwrap(), 3);
        let (i, tail): (Inode, u64) = decode(RecordKind::Snapshot, &bytes, no_upgrade).unwrap();
        assert_eq!(tail, 77, "the fields after the inode line up");
        assert_eq!((i.uid, i.times_ns(), i.names(), i.extra.rdev), (1000, (1, 2, 3), 1, 0));
        let mut new = i.clone();
        new.extra.extra_links.insert(7, 2);
        new.kind = Kind::CharDevice;
        new.extra.rdev = 0x0501;
        let back: Inode =
            decode(RecordKind::Snapshot, &encode(RecordKind::Snapshot, &new).unwrap(), no_upgrade).unwrap();
        assert_eq!((back.names(), back.extra.rdev, back.kind), (3, 0x0501, Kind::CharDevice));
        assert_eq!(back, new);
    }

    /// A format-5 state (no byte-range locks after `repair_paused`, no
    /// reserved chunk ids) and a format-6 one (no reserved ids) decode with
    /// none, and what follows them lines up.
    #[test]
    fn format_5_and_6_states_decode_without_byte_ranges_or_reserved_ids() {
        use crate::fsm::FsState;
        let mut st = FsState::default();
        st.last_session = 3;
        st.repair_paused = true;
        // An empty byte-range table is two zero bytes (no paths, ticket 0)
        // and no reserved runs one more, at the end of the state; a format-5
        // body has none of them, a format-6 one lacks the last.
        for (format, dropped) in [(5u16, 3usize), (6, 1)] {
            let mut bytes = encode(RecordKind::Snapshot, &(st.clone(), 77u64)).unwrap();
            let tail = bytes.len() - 1;
            assert_eq!(&bytes[tail - 3..], &[0, 0, 0, 77]);
            bytes.drain(tail - dropped..tail);
            let body_len = (bytes.len() - HEADER_BYTES) as u64;
            bytes[8..16].copy_from_slice(&body_len.to_le_bytes());
            let (back, after): (FsState, u64) =
                decode(RecordKind::Snapshot, &with_format(bytes, format), no_upgrade).unwrap();
            assert_eq!(after, 77, "format {format}: the fields after the state line up");
            assert_eq!(back, st);
        }
        // Format 7 keeps both.
        crate::fsm::testing::run(&mut st, crate::fsm::WriteCmd::ReserveChunkIds { count: 70 });
        st.ranges.acquire("/f", 3, crate::locks::Mode::Shared, 1, 2, false);
        let back: FsState =
            decode(RecordKind::Snapshot, &encode(RecordKind::Snapshot, &st).unwrap(), no_upgrade).unwrap();
        assert_eq!(back.ranges, st.ranges);
        assert_eq!(back.reserved, st.reserved);
    }

    /// A format-0 entry names its command flat; it decodes nested in its domain.
    #[test]
    fn a_legacy_flat_command_decodes_into_its_domain() {
        let legacy = br#"{"log_id":{"leader_id":{"term":1,"node_id":1},"index":4},"payload":{"Normal":{"now_ms":9,"request":null,"cmd":{"Rename":{"src":{"parts":["a"]},"dst":{"parts":["b"]}}}}}}"#;
        let e: Entry<TypeConfig> = decode(RecordKind::LogEntry, legacy, upgrade_legacy_entry_json).unwrap();
        let EntryPayload::Normal(p) = e.payload else { panic!("{:?}", e.payload) };
        let rename = crate::fsm::NamespaceCmd::Rename {
            src: NormalPath::parse("/a").unwrap(),
            dst: NormalPath::parse("/b").unwrap(),
            fence: None,
        };
        assert_eq!(p.cmd, rename.into());
    }
}
