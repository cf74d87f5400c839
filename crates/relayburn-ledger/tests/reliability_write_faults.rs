//! Write failures: a file-size limit (EFBIG, the writes cut short), a full
//! disk (ENOSPC on a small tmpfs that then grows), and a home that becomes
//! read-only (EROFS) between operations. Every failing call must return an
//! error naming the file, leave nothing a reader would take for a record,
//! keep the index from naming records the ledger lacks, and the home must
//! work again — with every earlier successful write intact — once space or
//! permission is back.
//!
//! The writers run in child processes (this test binary run again with
//! `--exact faults_child --ignored`): the size limit is per process, and
//! the tmpfs and read-only mounts are made in a private mount namespace of
//! the child (tests run as root; without CAP_SYS_ADMIN those two variants
//! print a notice and are skipped).

mod support;

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use relayburn_ledger::check;
use relayburn_ledger::index::Hash16;
use relayburn_ledger::json::{self, Value};
use relayburn_ledger::{Error, Ledger, LedgerHome, Query};

use support::reliability::*;

const ENTRY: &str = "faults_child";

// ---------------------------------------------------------------------------
// checks shared by the children and the parent
// ---------------------------------------------------------------------------

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        _ => "other",
    }
}

/// The error is `Error::Io` naming `path`, caused by `errno`.
fn expect_io(e: &Error, path: &Path, errno: i32) {
    match e {
        Error::Io {
            path: p, source, ..
        } => {
            assert_eq!(p, path, "{e}");
            assert_eq!(source.raw_os_error(), Some(errno), "{e}");
        }
        other => panic!("expected an I/O error on {}, got {other}", path.display()),
    }
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}

/// The error names a file of the home: `Error::Io` with a path under it,
/// or `Error::Sqlite` naming the archive. Returns (file name, errno).
fn names_a_home_file(e: &Error, home: &LedgerHome) -> (String, Option<i32>) {
    let (path, errno) = match e {
        Error::Io { path, source, .. } => (path.clone(), source.raw_os_error()),
        Error::Sqlite { path, .. } => {
            assert_eq!(path, &home.archive(), "{e}");
            (path.clone(), None)
        }
        other => panic!("unexpected error kind: {other}"),
    };
    assert!(path.starts_with(home.root()), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    let name = path
        .strip_prefix(home.root())
        .unwrap()
        .display()
        .to_string();
    (name, errno)
}

/// The ledger ends with a complete line, holds only whole records of the
/// workload, each once, and `ledger.idx` names none it lacks.
fn assert_ledger_whole(home: &LedgerHome, what: &str) -> LedgerAudit {
    let data = read(&home.ledger());
    let a = LedgerAudit::of(&data);
    assert!(a.ends_with_newline, "{what}: the ledger ends mid-line");
    assert!(
        a.fragments.is_empty(),
        "{what}: the ledger holds non-records: {:?}",
        a.fragments
            .iter()
            .map(|f| String::from_utf8_lossy(&f.1[..f.1.len().min(80)]).into_owned())
            .collect::<Vec<_>>()
    );
    a.assert_no_duplicates();
    let ids = ledger_ids(home);
    let idx = IndexAudit::of(&home.ledger_index());
    assert!(idx.torn_tail.is_none(), "{what}: ledger.idx ends mid-line");
    assert!(idx.bad.is_empty(), "{what}: ledger.idx has bad lines");
    let extra: Vec<String> = idx.set().difference(&ids).map(Hash16::hex).collect();
    assert!(
        extra.is_empty(),
        "{what}: ledger.idx names missing records {extra:?}"
    );
    a
}

/// Ids of every record in the ledger, whatever its kind.
fn ledger_ids(home: &LedgerHome) -> HashSet<Hash16> {
    let data = read(&home.ledger());
    let mut ids = HashSet::new();
    for l in lines_of(&data) {
        let Some(v) = parsed(l.bytes) else { continue };
        let Some(kind) = relayburn_ledger::records::line_kind(&v) else {
            continue;
        };
        let rec = v.get("record").unwrap_or(&relayburn_ledger::json::NULL);
        if let Some(Ok(h)) = relayburn_ledger::index::record_id(kind, rec) {
            ids.insert(h);
        }
    }
    ids
}

/// Every content sidecar ends with a complete line and holds only whole
/// records of the workload, each once. Returns the record numbers.
fn assert_sidecars_whole(home: &LedgerHome, what: &str) -> HashSet<usize> {
    let mut seen = HashSet::new();
    for k in 0..CONTENT_SESSIONS {
        let sid = content_session(k);
        let data = read(&home.content_file(&sid).unwrap());
        assert!(
            data.is_empty() || data.ends_with(b"\n"),
            "{what}: {sid} ends mid-line"
        );
        for l in lines_of(&data) {
            let i = parsed(l.bytes)
                .as_ref()
                .and_then(index_of)
                .unwrap_or_else(|| panic!("{what}: {sid}: a line that is not a record"));
            assert_eq!(l.bytes, content_line(i).as_bytes(), "{what}: {sid}");
            assert!(seen.insert(i), "{what}: content {i} twice");
        }
    }
    seen
}

/// The archive's cursor and its turn rows; `Ok(None)` when it has no
/// state row yet, `Err` when it cannot be read at all.
fn archive_state(home: &LedgerHome) -> rusqlite::Result<Option<(u64, i64)>> {
    use rusqlite::{Connection, OpenFlags, OptionalExtension};
    // Opened as the library opens it for reads (read-only, then immutable):
    // on a full disk a read-write open cannot set up the WAL index, which
    // says nothing about what the archive answered.
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
    let uri = |q: &str| format!("file:{}?{q}", home.archive().display());
    let conn = Connection::open_with_flags(uri("mode=ro"), flags)
        .and_then(|c| {
            c.query_row("SELECT COUNT(*) FROM sqlite_master", [], |_| Ok(()))
                .map(|()| c)
        })
        .or_else(|_| Connection::open_with_flags(uri("immutable=1"), flags))?;
    let tables: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('archive_state', 'turns')",
        [],
        |r| r.get(0),
    )?;
    if tables < 2 {
        return Ok(None);
    }
    let turns: i64 = conn.query_row("SELECT COUNT(*) FROM turns", [], |r| r.get(0))?;
    let cursor = conn
        .query_row(
            "SELECT ledger_offset_bytes FROM archive_state WHERE id = 1",
            [],
            |r| r.get::<_, i64>(0),
        )
        .optional()?;
    match cursor {
        Some(c) => Ok(Some((c as u64, turns))),
        None => {
            assert_eq!(turns, 0, "archive rows without a state row");
            Ok(None)
        }
    }
}

fn archive_cursor(home: &LedgerHome) -> u64 {
    let conn = rusqlite::Connection::open(home.archive()).unwrap();
    conn.query_row(
        "SELECT ledger_offset_bytes FROM archive_state WHERE id = 1",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap() as u64
}

/// The archive equals a full rebuild of the ledger's first `cursor` bytes.
fn assert_archive_matches(home: &LedgerHome, scratch: &Path, what: &str) {
    let cursor = archive_cursor(home);
    let data = read(&home.ledger());
    assert!(cursor as usize <= data.len(), "{what}: cursor past the end");
    assert!(
        cursor == 0 || data[cursor as usize - 1] == b'\n',
        "{what}: cursor {cursor} not at a line start"
    );
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch).unwrap();
    let fresh = LedgerHome::new(scratch);
    std::fs::write(fresh.ledger(), &data[..cursor as usize]).unwrap();
    Ledger::open(fresh.clone())
        .unwrap()
        .rebuild_archive()
        .unwrap();
    support::archive::assert_dumps_equal(
        &support::archive::dump(&home.archive()),
        &support::archive::dump(&fresh.archive()),
        what,
    );
}

/// Stamp `k`; `pad` bytes of note make it as big as needed.
fn stamp_line(k: usize, pad: usize) -> Value {
    json::parse(&format!(
        r#"{{"v":1,"kind":"stamp","ts":"2026-01-01T00:00:{:02}.{:03}Z","selector":{{"sessionId":"s-{}"}},"enrichment":{{"workflowId":"wf-{k}","note":"{}"}}}}"#,
        k / 1000 % 60,
        k % 1000,
        k % 7,
        "n".repeat(pad),
    ))
    .unwrap()
}

fn compaction(k: usize, pad: usize) -> Value {
    json::parse(&format!(
        r#"{{"v":1,"source":"codex","sessionId":"s-{}","ts":"2026-01-02T00:00:00.{:03}Z","tokensBeforeCompact":{k},"note":"{}"}}"#,
        k % 7,
        k % 1000,
        "n".repeat(pad),
    ))
    .unwrap()
}

fn set_fsize(limit: Option<u64>) {
    let rl = libc::rlimit {
        rlim_cur: limit.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain setrlimit on this process with a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &rl) }, 0);
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// mount(2); `Err` with the OS error.
fn mount(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> std::io::Result<()> {
    let src = src.map(|s| CString::new(s).unwrap());
    let fstype = fstype.map(|s| CString::new(s).unwrap());
    let data = data.map(|s| CString::new(s).unwrap());
    let target = c_path(target);
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a valid NUL-terminated string.
    let rc = unsafe {
        libc::mount(
            ptr(&src),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// child processes
// ---------------------------------------------------------------------------

/// Entry point of the child processes; does nothing in a normal run.
#[test]
#[ignore = "child process role, started by the other tests"]
fn faults_child() {
    let Some((role, args)) = support::role::current() else {
        return;
    };
    match role.as_str() {
        "fsize" => fsize_child(&args),
        "diskfull" => diskfull_child(&args),
        "readonly" => readonly_child(&args),
        other => panic!("unknown role {other}"),
    }
}

fn turns(r: std::ops::Range<usize>) -> Vec<Value> {
    r.map(turn).collect()
}

/// <home> <next turn> <next content>
fn fsize_child(args: &[String]) {
    let home = LedgerHome::new(&args[0]);
    let mut next: usize = args[1].parse().unwrap();
    let mut next_content: usize = args[2].parse().unwrap();
    // SAFETY: ignoring a signal; writes past the limit then fail with EFBIG.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let l = Ledger::open(home.clone()).unwrap();
    let ledger = home.ledger();

    // 1. The ledger reaches the limit: the write is cut short, then fails.
    set_fsize(Some(len(&ledger) + 16_000));
    let failed = loop {
        let before = read(&ledger);
        let idx_before = read(&home.ledger_index());
        match l.append_turns(turns(next..next + 10)) {
            Ok(n) => assert_eq!(n, 10),
            Err(e) => {
                expect_io(&e, &ledger, libc::EFBIG);
                assert_eq!(read(&ledger), before, "the failed write was not undone");
                assert_eq!(read(&home.ledger_index()), idx_before);
                break next..next + 10;
            }
        }
        next += 10;
        assert!(next < 2_000, "the limit was never reached");
    };
    mark("ledger-full", format!("{} {}", failed.start, len(&ledger)));
    let before = read(&ledger);
    expect_io(
        &l.append_turns(turns(failed.clone())).unwrap_err(),
        &ledger,
        libc::EFBIG,
    );
    expect_io(
        &l.append_stamp(&stamp_line(1, 20_000)).unwrap_err(),
        &ledger,
        libc::EFBIG,
    );
    expect_io(
        &l.append_compactions(vec![compaction(1, 20_000)])
            .unwrap_err(),
        &ledger,
        libc::EFBIG,
    );
    assert_eq!(read(&ledger), before);
    assert_ledger_whole(&home, "ledger at the limit");

    // 2. Room again: the same process appends what failed.
    set_fsize(None);
    assert_eq!(l.append_turns(turns(failed.clone())).unwrap(), 10);
    l.append_stamp(&stamp_line(1, 20_000)).unwrap();
    assert_eq!(
        l.append_compactions(vec![compaction(1, 20_000)]).unwrap(),
        1
    );
    next = failed.end;
    assert_ledger_whole(&home, "after the limit was lifted");

    // 3. The index reaches the limit after the ledger write went through.
    // Blank lines (which readers skip) make ledger.idx the bigger file.
    let idx = home.ledger_index();
    let pad = vec![b'\n'; (len(&ledger) * 2) as usize];
    std::fs::OpenOptions::new()
        .append(true)
        .open(&idx)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &pad))
        .unwrap();
    let idx_before = read(&idx);
    set_fsize(Some(len(&idx) + 100));
    let batch = next..next + 10;
    let e = l.append_turns(turns(batch.clone())).unwrap_err();
    expect_io(&e, &idx, libc::EFBIG);
    assert_eq!(
        read(&idx),
        idx_before,
        "the failed index write was not undone"
    );
    let present = assert_ledger_whole(&home, "index at the limit").present();
    assert!(
        batch.clone().all(|i| present.contains(&i)),
        "the ledger write went through"
    );
    // A retry, here or from a fresh handle, appends nothing twice.
    assert_eq!(l.append_turns(turns(batch.clone())).unwrap(), 0);
    let fresh = Ledger::open(home.clone()).unwrap();
    assert_eq!(fresh.append_turns(turns(batch.clone())).unwrap(), 0);
    set_fsize(None);
    next = batch.end;
    assert_eq!(l.append_turns(turns(next..next + 10)).unwrap(), 10);
    next += 10;
    mark("index-full", batch.start);

    // 4. A content sidecar reaches the limit.
    let sidecar = home.content_file(&content_session(0)).unwrap();
    set_fsize(Some(len(&sidecar) + 12_000));
    let mut failed_content = None;
    for _ in 0..200 {
        // Records of session cs-0 only: every fourth one.
        let recs: Vec<usize> = (0..3).map(|k| next_content + 4 * k).collect();
        let before = read(&sidecar);
        match l.append_content(recs.iter().map(|&i| content(i)).collect()) {
            Ok(s) => assert_eq!(s.appended, 3),
            Err(e) => {
                expect_io(&e, &sidecar, libc::EFBIG);
                assert_eq!(read(&sidecar), before, "the failed write was not undone");
                failed_content = Some(recs);
                break;
            }
        }
        next_content += 12;
    }
    let recs = failed_content.expect("the sidecar never reached the limit");
    assert_sidecars_whole(&home, "sidecar at the limit");
    set_fsize(None);
    let s = l
        .append_content(recs.iter().map(|&i| content(i)).collect())
        .unwrap();
    assert_eq!(s.appended, 3);
    next_content += 12;

    // 5. The archive cannot grow: the build fails and rolls back.
    l.build_archive().unwrap();
    let cursor = archive_cursor(&home);
    assert_eq!(l.append_turns(turns(next..next + 30)).unwrap(), 30);
    next += 30;
    set_fsize(Some(4096));
    let e = l.build_archive().unwrap_err();
    let (file, errno) = names_a_home_file(&e, &home);
    mark("archive-error", format!("{file} {errno:?} {e}"));
    set_fsize(None);
    assert_eq!(
        archive_cursor(&home),
        cursor,
        "a failed build moved the cursor"
    );
    l.build_archive().unwrap();
    assert_eq!(archive_cursor(&home), len(&ledger));
    mark("done", format!("{next} {next_content}"));
}

/// <tmpfs mount point> <out dir> <seed>
fn diskfull_child(args: &[String]) {
    let root = PathBuf::from(&args[0]);
    let out = PathBuf::from(&args[1]);
    let mut rng = Rng::new(args[2].parse().unwrap());
    let mut size_kb: u64 = args[3].parse().unwrap();
    let archive_first = args[4] == "archive-first";
    if let Err(e) = mount(
        Some("tmpfs"),
        &root,
        Some("tmpfs"),
        0,
        Some(&format!("size={size_kb}k")),
    ) {
        mark("skip", format!("cannot mount a tmpfs: {e}"));
        return;
    }
    let home = LedgerHome::new(&root);
    let l = Ledger::open(home.clone()).unwrap();
    let (mut next, mut next_content, mut next_stamp) = (0usize, 0usize, 0usize);
    if archive_first {
        // Later builds then fail inside their transaction, not while the
        // archive is being created.
        l.append_turns(turns(0..20)).unwrap();
        l.build_archive().unwrap();
        next = 20;
    }
    // Failed operations, retried once there is room.
    let mut pending: Vec<(u8, Vec<usize>)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut ok = 0;
    let mut grown = 0;
    let mut in_a_row = 0;
    let mut half_made = 0;
    let mut acked: HashSet<usize> = HashSet::new();
    let (mut archive_answered, mut archive_refused) = (0, 0);
    let mut refusals = std::collections::BTreeSet::new();
    while grown < 30 {
        let op = rng.below(10) as u8;
        let (items, result) = match op {
            0..=4 => {
                let n = rng.range(5, 30) as usize;
                let items: Vec<usize> = (next..next + n).collect();
                next += n;
                let r = l.append_turns(items.iter().map(|&i| turn(i)).collect());
                (items, r.map(drop))
            }
            5..=6 => {
                let n = rng.range(2, 10) as usize;
                let items: Vec<usize> = (next_content..next_content + n).collect();
                next_content += n;
                let r = l.append_content(items.iter().map(|&i| content(i)).collect());
                (items, r.map(drop))
            }
            7 => {
                next_stamp += 1;
                (vec![next_stamp], l.append_stamp(&stamp_line(next_stamp, 0)))
            }
            _ => (Vec::new(), l.build_archive().map(drop)),
        };
        match result {
            Ok(()) => {
                if op <= 4 {
                    acked.extend(items.iter().copied());
                }
                ok += 1;
                in_a_row = 0;
            }
            Err(e) => {
                let (file, errno) = names_a_home_file(&e, &home);
                if let Some(errno) = errno {
                    assert_eq!(errno, libc::ENOSPC, "{e}");
                }
                failures.push(format!("{file}:{}", errno.map_or("sqlite", errno_name)));
                let what = format!("after failure {}: {e}", failures.len());
                let audit = assert_ledger_whole(&home, &what);
                assert_sidecars_whole(&home, &what);
                if home.archive().exists() {
                    match archive_state(&home) {
                        Ok(Some((c, _))) => {
                            let data = read(&home.ledger());
                            assert!(c == 0 || data[c as usize - 1] == b'\n', "{what}");
                        }
                        // Creating the archive ran out of room before its
                        // state row was written: no rows yet, and the next
                        // build completes it.
                        Ok(None) => half_made += 1,
                        Err(_) => {}
                    }
                }
                match reads_while_full(&l, &home, &audit, &acked, &what) {
                    Ok(()) => archive_answered += 1,
                    Err(e) => {
                        archive_refused += 1;
                        refusals.insert(e);
                    }
                }
                pending.push((op, items));
                in_a_row += 1;
            }
        }
        // Full for a while: free some room, as a user deleting files would.
        if in_a_row >= 3 {
            size_kb += 16;
            mount(
                None,
                &root,
                None,
                libc::MS_REMOUNT,
                Some(&format!("size={size_kb}k")),
            )
            .unwrap();
            grown += 1;
            in_a_row = 0;
        }
        assert!(ok + failures.len() < 5_000, "the tmpfs never filled");
    }
    // Plenty of room: every failed operation goes through now.
    mount(None, &root, None, libc::MS_REMOUNT, Some("size=64m")).unwrap();
    for (op, items) in pending {
        match op {
            0..=4 => drop(
                l.append_turns(items.iter().map(|&i| turn(i)).collect())
                    .unwrap(),
            ),
            5..=6 => drop(
                l.append_content(items.iter().map(|&i| content(i)).collect())
                    .unwrap(),
            ),
            7 => l.append_stamp(&stamp_line(items[0], 0)).unwrap(),
            _ => drop(l.build_archive().unwrap()),
        }
    }
    l.build_archive().unwrap();
    assert_ledger_whole(&home, "after the retries");
    copy_tree(&root, &out);
    mark(
        "archive-reads",
        format!("{archive_answered} answered, {archive_refused} refused {refusals:?}"),
    );
    mark(
        "done",
        format!(
            "{next} {next_content} {next_stamp} {ok} {size_kb} {half_made} {}",
            failures.join(",")
        ),
    );
}

/// <home (bind-mounted onto itself)>
fn readonly_child(args: &[String]) {
    let root = PathBuf::from(&args[0]);
    let home = LedgerHome::new(&root);
    let l = Ledger::open(home.clone()).unwrap();
    assert_eq!(l.append_turns(turns(0..50)).unwrap(), 50);
    l.append_content((0..8).map(content).collect()).unwrap();
    l.build_archive().unwrap();

    let ro = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
    mount(None, &root, None, ro, None).unwrap();
    let before = read(&home.ledger());
    let started = std::time::Instant::now();
    expect_io(
        &l.append_turns(turns(50..60)).unwrap_err(),
        &home.lock("ledger"),
        libc::EROFS,
    );
    expect_io(
        &l.append_stamp(&stamp_line(1, 20_000)).unwrap_err(),
        &home.lock("ledger"),
        libc::EROFS,
    );
    let sid = content_session(8);
    expect_io(
        &l.append_content(vec![content(8)]).unwrap_err(),
        &home.lock(&format!("content.{sid}")),
        libc::EROFS,
    );
    expect_io(
        &l.build_archive().unwrap_err(),
        &home.lock("archive"),
        libc::EROFS,
    );
    expect_io(
        &l.rebuild_index().unwrap_err(),
        &home.lock("ledger"),
        libc::EROFS,
    );
    // Five refusals, none of them waiting on a lock.
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    mark(
        "refused-in",
        format!("{:.2}ms", took.as_secs_f64() * 1000.0),
    );
    assert_eq!(read(&home.ledger()), before);
    // Reading needs no write access.
    assert_eq!(l.query_turns(&Query::default()).unwrap().count(), 50);
    assert_eq!(l.read_content(&content_session(0), None).unwrap().len(), 2);
    // The archive too: opened read-only, immutable since the directory
    // cannot be written.
    let report = check::check(&home, &mut |_, _| {}).unwrap();
    assert_eq!(report.problems(), Vec::<String>::new());
    assert_eq!(
        l.query_turns_from_archive(&Query::default()).unwrap().len(),
        50
    );
    let status = l.archive_status().unwrap();
    assert!(status.up_to_date && status.problem.is_none(), "{status:?}");
    assert_eq!(status.row_counts.turns, 50);

    mount(None, &root, None, libc::MS_BIND | libc::MS_REMOUNT, None).unwrap();
    assert_eq!(l.append_turns(turns(50..60)).unwrap(), 10);
    l.append_stamp(&stamp_line(1, 20_000)).unwrap();
    assert_eq!(l.append_content(vec![content(8)]).unwrap().appended, 1);
    l.build_archive().unwrap();
    l.rebuild_index().unwrap();
    mark("done", "");
}

// ---------------------------------------------------------------------------
// the tests
// ---------------------------------------------------------------------------

/// Run a child to its end; returns its markers.
fn run(mut cmd: Command) -> Vec<(String, String)> {
    let mut c = cmd.spawn().unwrap();
    let marks = Marks::of(&mut c).rest();
    let status = c.wait().unwrap();
    assert!(
        status.success(),
        "child failed ({status}); markers {marks:?}"
    );
    marks
}

fn marker<'a>(marks: &'a [(String, String)], name: &str) -> Option<&'a str> {
    marks
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, d)| d.as_str())
}

/// The state a parent checks after a child's faults: every record once and
/// whole, a clean report after an index rebuild, an archive equal to a
/// full rebuild.
fn final_checks(home: &LedgerHome, turns_upto: usize, content_upto: Option<usize>, scratch: &Path) {
    let a = assert_ledger_whole(home, "final");
    let present = a.present();
    for i in 0..turns_upto {
        assert!(present.contains(&i), "turn {i} lost");
    }
    if let Some(upto) = content_upto {
        let seen = assert_sidecars_whole(home, "final");
        for i in 0..upto {
            assert!(seen.contains(&i), "content {i} lost");
        }
    }
    let l = Ledger::open(home.clone()).unwrap();
    l.rebuild_index().unwrap();
    let report = check::check(home, &mut |_, _| {}).unwrap();
    assert!(report.problems().is_empty(), "{:?}", report.problems());
    assert_archive_matches(home, scratch, "final archive");
}

#[test]
fn a_file_size_limit_fails_cleanly_and_lifting_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let home = LedgerHome::new(dir.path().join("home"));
    let l = Ledger::open(home.clone()).unwrap();
    assert_eq!(l.append_turns(turns(0..200)).unwrap(), 200);
    l.append_content((0..40).map(content).collect()).unwrap();
    let marks = run(child(
        ENTRY,
        "fsize",
        &[home.root().display().to_string(), "200".into(), "40".into()],
    ));
    eprintln!("file size limit: {marks:?}");
    let done = marker(&marks, "done").unwrap();
    let (next, next_content) = done.split_once(' ').unwrap();
    let next: usize = next.parse().unwrap();
    let next_content: usize = next_content.parse().unwrap();
    // Content records of session cs-0 were written up to next_content.
    let seen = assert_sidecars_whole(&home, "final");
    for i in (0..next_content).filter(|i| i % 4 == 0 || *i < 40) {
        assert!(seen.contains(&i), "content {i} lost");
    }
    final_checks(&home, next, None, &dir.path().join("scratch"));
    let report = check::check(&home, &mut |_, _| {}).unwrap();
    assert_eq!(
        report
            .kinds
            .iter()
            .find(|k| k.0 == relayburn_ledger::Kind::Stamp)
            .unwrap()
            .1,
        1
    );
}

/// One full-disk run; `None` when no tmpfs can be mounted here. Returns
/// the failures by file.
fn full_disk_round(
    seed: u64,
    start_kb: u64,
    archive_first: bool,
) -> Option<std::collections::BTreeMap<String, usize>> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("home");
    let out = dir.path().join("out");
    std::fs::create_dir(&root).unwrap();
    let mut cmd = child(
        ENTRY,
        "diskfull",
        &[
            root.display().to_string(),
            out.display().to_string(),
            seed.to_string(),
            start_kb.to_string(),
            if archive_first { "archive-first" } else { "-" }.to_string(),
        ],
    );
    support::role::private_mounts(&mut cmd, None, false);
    let mut c = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("notice: no private mount namespace here ({e}); skipping the full-disk test");
            return None;
        }
    };
    let marks = Marks::of(&mut c).rest();
    assert!(
        c.wait().unwrap().success(),
        "child failed; markers {marks:?}"
    );
    if let Some(why) = marker(&marks, "skip") {
        eprintln!("notice: {why}; skipping the full-disk test");
        return None;
    }
    if let Some(reads) = marker(&marks, "archive-reads") {
        eprintln!("full disk (seed {seed:#x}): archive queries while full: {reads}");
    }
    // Nothing was written to the directory under the tmpfs.
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    let done: Vec<&str> = marker(&marks, "done").unwrap().split(' ').collect();
    let (next, next_content, stamps, ok, size_kb, half_made) = (
        done[0].parse().unwrap(),
        done[1].parse().unwrap(),
        done[2].parse::<usize>().unwrap(),
        done[3],
        done[4],
        done[5],
    );
    let failures: Vec<&str> = done.get(6).map_or(Vec::new(), |f| f.split(',').collect());
    let mut by_file = std::collections::BTreeMap::new();
    for f in &failures {
        *by_file.entry(f.to_string()).or_insert(0) += 1;
    }
    eprintln!(
        "full disk (seed {seed:#x}, {start_kb} KiB{}): {ok} operations succeeded, {} failed \
         ({by_file:?}); grown to {size_kb} KiB before the final retries; {half_made} failures \
         found a first archive still without its state row",
        if archive_first {
            ", archive built first"
        } else {
            ""
        },
        failures.len()
    );
    assert!(failures.len() >= 12, "too few failures to mean anything");
    let home = LedgerHome::new(&out);
    final_checks(&home, next, Some(next_content), &dir.path().join("scratch"));
    let report = check::check(&home, &mut |_, _| {}).unwrap();
    let stamp_lines = report
        .kinds
        .iter()
        .find(|k| k.0 == relayburn_ledger::Kind::Stamp)
        .unwrap()
        .1;
    assert_eq!(stamp_lines as usize, stamps, "every stamp once");
    Some(by_file)
}

/// What must hold while the disk is full, after a failed operation: the
/// ledger query answers, with exactly the turns the file holds, in file
/// order, every acknowledged append among them; the archive query either
/// answers exactly the turns of the ledger up to the archive's cursor or
/// fails (`Err` with its message) — it never answers wrongly.
fn reads_while_full(
    l: &Ledger,
    home: &LedgerHome,
    audit: &LedgerAudit,
    acked: &HashSet<usize>,
    what: &str,
) -> Result<(), String> {
    let from_ledger: Vec<usize> = l
        .query_turns(&Query::default())
        .unwrap_or_else(|e| panic!("{what}: the ledger query failed: {e}"))
        .map(|t| index_of(&t.unwrap()).unwrap())
        .collect();
    let in_file: Vec<usize> = audit.records.iter().map(|r| r.1).collect();
    assert_eq!(from_ledger, in_file, "{what}: ledger query");
    let present = audit.present();
    let lost: Vec<&usize> = acked.iter().filter(|i| !present.contains(i)).collect();
    assert!(
        lost.is_empty(),
        "{what}: acknowledged turns missing {lost:?}"
    );
    if !home.archive().exists() {
        return Err("no archive yet".into());
    }
    let rows = relayburn_ledger::archive::query_all_from_archive(home, &Query::default())
        .map_err(|e| e.to_string())?;
    let cursor = match archive_state(home) {
        Ok(Some((c, _))) => c,
        Ok(None) => 0,
        Err(e) => panic!("{what}: the archive answered but its state is unreadable: {e}"),
    };
    let mut got: Vec<usize> = rows.iter().map(|r| index_of(r).unwrap()).collect();
    got.sort_unstable();
    let mut want: Vec<usize> = audit.before(cursor).records.iter().map(|r| r.1).collect();
    want.sort_unstable();
    want.dedup();
    assert_eq!(got, want, "{what}: the archive answered wrongly");
    Ok(())
}

/// `RELAYBURN_FAULTS_ROUNDS` runs (default 3), the first creating the
/// archive under pressure, the others building it first.
#[test]
fn a_full_disk_fails_cleanly_and_recovers_when_space_returns() {
    let seed = env_u64("RELAYBURN_FAULTS_SEED", 0xd15c_f011);
    let rounds = env_u64("RELAYBURN_FAULTS_ROUNDS", if long_run() { 40 } else { 3 });
    let mut rng = Rng::new(seed);
    let mut total = std::collections::BTreeMap::new();
    for round in 0..rounds {
        let (kb, first) = if round == 0 {
            (256, false)
        } else {
            (1024, true)
        };
        let Some(by_file) = full_disk_round(rng.next_u64(), kb, first) else {
            return;
        };
        for (k, v) in by_file {
            *total.entry(k).or_insert(0) += v;
        }
    }
    eprintln!("full disk: {rounds} runs, failures by file {total:?}");
}

#[test]
fn a_home_made_read_only_fails_at_once_and_works_again_when_writable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("home");
    std::fs::create_dir(&root).unwrap();
    let mut cmd = child(ENTRY, "readonly", &[root.display().to_string()]);
    support::role::private_mounts(&mut cmd, Some(&root), false);
    let mut c = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("notice: cannot make a read-only mount here ({e}); skipping");
            return;
        }
    };
    let marks = Marks::of(&mut c).rest();
    assert!(
        c.wait().unwrap().success(),
        "child failed; markers {marks:?}"
    );
    eprintln!("read-only home: {marks:?}");
    let home = LedgerHome::new(&root);
    final_checks(&home, 60, Some(9), &dir.path().join("scratch"));
}
