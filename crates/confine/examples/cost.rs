//! Prints what each confinement step costs on this host (release build advised).
fn main() {
    use std::time::Instant;
    for role in confine::Role::ALL {
        let t = Instant::now();
        let p = confine::seccomp::program(role, seccompiler::SeccompAction::Trap).unwrap();
        println!("{:?}: compile {:?} ({} insns)", role, t.elapsed(), p.len());
    }
    std::thread::spawn(|| {
        let t = Instant::now();
        confine::privileges::drop_all().unwrap();
        println!("drop_all {:?}", t.elapsed());
        let t = Instant::now();
        let mut r = confine::FsRules::default();
        r.allow_read("/tmp");
        confine::fs::restrict_thread(&r).unwrap();
        println!("landlock {:?}", t.elapsed());
        let t = Instant::now();
        confine::seccomp::install(confine::Role::Vcpu, confine::SeccompMode::On).unwrap();
        println!("install vcpu {:?}", t.elapsed());
    })
    .join()
    .unwrap();
}
