#[test]
fn smoke() {
    let h = rawthread::spawn(|| {
        println!("hello from {}", unsafe { libc::gettid() });
        42
    });
    println!("tid {}", h.tid());
    assert_eq!(h.join().unwrap(), 42);
    let r = rawthread::spawn(|| panic!("boom")).join();
    assert_eq!(*r.unwrap_err().downcast::<&str>().unwrap(), "boom");
    println!("clone3: {:?}", rawthread::uses_clone3());
}
