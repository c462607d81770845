//! Frames both ways, and the hostile input either end may get.

use super::*;

fn spec() -> ProcessSpec {
    ProcessSpec {
        args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        additional_gids: vec![],
        rlimits: vec![],
        no_new_privileges: true,
        terminal: false,
        oom_score_adj: None,
    }
}

fn container() -> ContainerSpec {
    ContainerSpec {
        process: spec(),
        hostname: Some("c1".into()),
        mounts: vec![MountSpec {
            destination: "/proc".into(),
            fstype: "proc".into(),
            options: vec!["nosuid".into()],
            source: None,
        }],
        masked_paths: vec!["/proc/kcore".into()],
        readonly_paths: vec!["/proc/sys".into()],
        readonly_root: false,
        files: vec![],
        limits: None,
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

#[test]
fn messages_round_trip() {
    let mut buf = Vec::new();
    write_frame(
        &mut buf,
        &HostMessage::Run {
            container: Box::new(container()),
        },
    )
    .unwrap();
    write_frame(&mut buf, &HostMessage::Signal { signal: 15 }).unwrap();
    write_frame(&mut buf, &AgentMessage::Exited { status: 3 }).unwrap();
    let mut r = buf.as_slice();
    let run: HostMessage = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(
        run,
        HostMessage::Run {
            container: Box::new(container())
        }
    );
    let sig: HostMessage = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(sig, HostMessage::Signal { signal: 15 });
    let exit: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(exit, AgentMessage::Exited { status: 3 });
    assert!(read_frame::<_, AgentMessage>(&mut r).unwrap().is_none());
}

#[test]
fn stats_requests_and_answers_round_trip() {
    let stats = CgroupStats {
        cpu_usage_usec: 12,
        memory_usage: 4096,
        memory_limit: u64::MAX,
        ..CgroupStats::default()
    };
    let mut buf = Vec::new();
    write_frame(&mut buf, &HostMessage::Stats).unwrap();
    let answer = AgentMessage::Stats {
        stats: Box::new(stats),
    };
    write_frame(&mut buf, &answer).unwrap();
    let mut r = buf.as_slice();
    let asked: HostMessage = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(asked, HostMessage::Stats);
    let got: AgentMessage = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(got, answer);
}

#[test]
fn oversized_and_empty_frames_are_refused_before_reading_the_body() {
    let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
    let err = read_frame::<_, AgentMessage>(&mut huge.as_slice()).unwrap_err();
    assert!(
        matches!(err, ProtocolError::TooLarge(n) if n == MAX_FRAME + 1),
        "{err}"
    );
    let max = u32::MAX.to_be_bytes();
    assert!(matches!(
        read_frame::<_, AgentMessage>(&mut max.as_slice()),
        Err(ProtocolError::TooLarge(_))
    ));
    let empty = 0u32.to_be_bytes();
    assert!(matches!(
        read_frame::<_, AgentMessage>(&mut empty.as_slice()),
        Err(ProtocolError::Empty)
    ));
}

#[test]
fn truncated_frames_are_errors_not_clean_ends() {
    assert!(matches!(
        read_frame::<_, AgentMessage>(&mut [0u8, 0].as_slice()),
        Err(ProtocolError::Truncated)
    ));
    let mut f = frame(br#"{"type":"exited","status":3}"#);
    f.truncate(f.len() - 2);
    assert!(matches!(
        read_frame::<_, AgentMessage>(&mut f.as_slice()),
        Err(ProtocolError::Truncated)
    ));
}

#[test]
fn malformed_unknown_and_mistyped_messages_are_refused() {
    for body in [
        &b"not json"[..],
        br#"{"type":"format_disk"}"#,
        br#"{"type":"exited","status":3,"extra":1}"#,
        br#"{"type":"exited","status":-1}"#,
        br#"{"type":"exited","status":"3"}"#,
        br#"{"type":"stdout","data":[256]}"#,
        br#"{"type":"started"}"#,
        br#"{"type":"stats","stats":{"memory_usage":-1}}"#,
        br#"{"type":"stats","stats":{"evil":1}}"#,
        br#"[1,2,3]"#,
    ] {
        let f = frame(body);
        assert!(
            matches!(
                read_frame::<_, AgentMessage>(&mut f.as_slice()),
                Err(ProtocolError::Json(_))
            ),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let f = frame(br#"{"type":"signal","signal":9,"pid":1}"#);
    assert!(read_frame::<_, HostMessage>(&mut f.as_slice()).is_err());
}

#[test]
fn process_specs_are_validated() {
    assert!(spec().validate().is_ok());
    let cases: Vec<ProcessBreaker> = vec![
        (|s| s.args.clear(), "args is empty"),
        (|s| s.args[0] = String::new(), "args is empty"),
        (|s| s.args[1] = "a\0b".into(), "NUL"),
        (|s| s.cwd = "relative".into(), "not absolute"),
        (|s| s.env.push("NOEQUALS".into()), "KEY=VALUE"),
        (|s| s.env.push("=x".into()), "KEY=VALUE"),
        (|s| s.env = vec!["A=b".into(); MAX_LIST + 1], "more than"),
    ];
    for (break_it, expect) in cases {
        let mut s = spec();
        break_it(&mut s);
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains(expect), "{err} (expected {expect})");
    }
}

#[test]
fn only_real_signal_numbers_are_valid() {
    assert!(valid_signal(1) && valid_signal(15) && valid_signal(64));
    assert!(!valid_signal(0) && !valid_signal(-9) && !valid_signal(65));
}

#[test]
fn frames_larger_than_the_limit_are_not_written() {
    let big = AgentMessage::Stdout {
        data: vec![255; MAX_FRAME],
    };
    let mut buf = Vec::new();
    assert!(matches!(
        write_frame(&mut buf, &big),
        Err(ProtocolError::TooLarge(_))
    ));
    assert!(buf.is_empty());
}

#[test]
fn container_specs_are_validated() {
    assert!(container().validate().is_ok());
    let cases: Vec<ContainerBreaker> = vec![
        (|c| c.mounts[0].destination = "proc".into(), "not absolute"),
        (
            |c| c.mounts[0].destination = "/a/../../etc".into(),
            "not absolute",
        ),
        (|c| c.masked_paths.push("/x\0".into()), "not absolute"),
        (|c| c.readonly_paths.push("".into()), "not absolute"),
        (|c| c.mounts[0].fstype = "ext4".into(), "mount type"),
        (|c| c.mounts[0].fstype = "bind".into(), "mount type"),
        (|c| c.mounts[0].options.push("a\0".into()), "NUL"),
        (|c| c.mounts[0].source = Some("c1/0".into()), "with source"),
        (|c| c.mounts[0].fstype = VOLUME.into(), "with source"),
        (
            |c| {
                c.mounts[0].fstype = VOLUME.into();
                c.mounts[0].source = Some("../0".into());
            },
            "with source",
        ),
        (|c| c.hostname = Some("h".repeat(65)), "hostname"),
        (|c| c.process.args.clear(), "args is empty"),
    ];
    for (break_it, expect) in cases {
        let mut c = container();
        break_it(&mut c);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains(expect), "{err} (expected {expect})");
    }
}

/// A change that breaks a valid value, and what the error must say.
type ProcessBreaker = (fn(&mut ProcessSpec), &'static str);

/// A change that breaks a valid value, and what the error must say.
type ContainerBreaker = (fn(&mut ContainerSpec), &'static str);

#[test]
fn exec_requests_round_trip_and_exec_ids_are_checked() {
    let mut buf = Vec::new();
    let exec = HostMessage::Exec {
        id: "e1".into(),
        process: Box::new(spec()),
    };
    write_frame(&mut buf, &exec).unwrap();
    let attach = AgentMessage::Attach { id: "e1".into() };
    write_frame(&mut buf, &attach).unwrap();
    let mut r = buf.as_slice();
    assert_eq!(read_frame::<_, HostMessage>(&mut r).unwrap().unwrap(), exec);
    assert_eq!(
        read_frame::<_, AgentMessage>(&mut r).unwrap().unwrap(),
        attach
    );
    for good in ["e1", "exec-3.a_b", &"x".repeat(MAX_EXEC_ID)] {
        assert!(valid_id(good), "{good}");
    }
    for bad in ["", "a/b", "..\0", "a b", &"x".repeat(MAX_EXEC_ID + 1), "é"] {
        assert!(!valid_id(bad), "{bad:?}");
    }
    let unknown = br#"{"type":"attach","exec":"e1","pid":3}"#;
    let framed = frame(unknown);
    assert!(read_frame::<_, AgentMessage>(&mut framed.as_slice()).is_err());
}

#[test]
fn a_pods_container_requests_round_trip_and_strays_are_refused() {
    let mut buf = Vec::new();
    let sent = [HostMessage::Container {
        id: "c2".into(),
        container: Box::new(container()),
    }];
    for m in &sent {
        write_frame(&mut buf, m).unwrap();
    }
    let mut r = buf.as_slice();
    for m in &sent {
        assert_eq!(&read_frame::<_, HostMessage>(&mut r).unwrap().unwrap(), m);
    }
    for hostile in [
        &br#"{"type":"container","id":"c2"}"#[..],
        // The root no longer travels on the connection (it is in the VM's share).
        br#"{"type":"root_data","data":[1]}"#,
        br#"{"type":"root_end"}"#,
    ] {
        let framed = frame(hostile);
        let read = read_frame::<_, HostMessage>(&mut framed.as_slice());
        assert!(read.is_err(), "{}", String::from_utf8_lossy(hostile));
    }
}

#[test]
fn limits_the_kernel_cannot_take_are_refused() {
    let mut c = container();
    let limits = |memory_max, cpu_max| {
        Some(Limits {
            memory_max,
            memory_low: None,
            cpu_max,
        })
    };
    c.limits = limits(Some(64 << 20), Some((50_000, 100_000)));
    c.validate().unwrap();
    for bad in [
        limits(Some(4096), None),
        limits(None, Some((10, 100_000))),
        limits(None, Some((50_000, 10))),
        limits(None, Some((50_000, 2_000_000))),
    ] {
        c.limits = bad;
        assert!(c.validate().is_err(), "{:?}", c.limits);
    }
}

#[test]
fn volume_sources_are_a_container_id_and_a_number_only() {
    for good in ["c1/0", "abc-_.9/12", "x/9999"] {
        assert!(valid_volume_source(good), "{good}");
    }
    for bad in [
        "", "c1", "c1/", "/0", "../0", "./0", "c1/0/x", "c1/a", "c1/12345", "c 1/0", "c1/-1",
        "c1/../0",
    ] {
        assert!(!valid_volume_source(bad), "{bad}");
    }
    let mut c = container();
    c.mounts[0] = MountSpec {
        destination: "/data".into(),
        fstype: VOLUME.into(),
        options: vec!["rbind".into(), "ro".into()],
        source: Some("c1/0".into()),
    };
    c.validate().unwrap();
}

#[test]
fn a_pod_containers_root_is_its_own_in_the_share() {
    assert_eq!(pod_root_source("c2"), "c2/root");
    // Not a volume's name: a container's volume cannot name another's root.
    assert!(!valid_volume_source(&pod_root_source("c2")));
}
