// The doc examples of rust-lang/rust's library/std/src/thread/scoped.rs
// (MIT OR Apache-2.0), each as a test, named after what it documents;
// included by tests/std_thread.rs once per path.

std_test! {
fn scope() {
    let mut a = vec![1, 2, 3];
    let mut x = 0;

    thread::scope(|s| {
        s.spawn(|| {
            println!("hello from the first scoped thread");
            // We can borrow `a` here.
            dbg!(&a);
        });
        s.spawn(|| {
            println!("hello from the second scoped thread");
            // We can even mutably borrow `x` here,
            // because no other threads are using it.
            x += a[0] + a[2];
        });
        println!("hello from the main thread");
    });

    // After the scope, we can modify and access our variables again:
    a.push(4);
    assert_eq!(x, a.len());
}
}

std_test! {
fn builder_spawn_scoped() {
    let mut a = vec![1, 2, 3];
    let mut x = 0;

    thread::scope(|s| {
        thread::Builder::new()
            .name("first".to_string())
            .spawn_scoped(s, ||
        {
            println!("hello from the {:?} scoped thread", thread::current().name());
            // We can borrow `a` here.
            dbg!(&a);
        })
        .unwrap();
        thread::Builder::new()
            .name("second".to_string())
            .spawn_scoped(s, ||
        {
            println!("hello from the {:?} scoped thread", thread::current().name());
            // We can even mutably borrow `x` here,
            // because no other threads are using it.
            x += a[0] + a[2];
        })
        .unwrap();
        println!("hello from the main thread");
    });

    // After the scope, we can modify and access our variables again:
    a.push(4);
    assert_eq!(x, a.len());
}
}

std_test! {
fn scoped_join_handle_thread() {
    thread::scope(|s| {
        let t = s.spawn(|| {
            println!("hello");
        });
        println!("thread id: {:?}", t.thread().id());
    });
}
}

std_test! {
fn scoped_join_handle_join() {
    thread::scope(|s| {
        let t = s.spawn(|| {
            panic!("oh no");
        });
        assert!(t.join().is_err());
    });
}
}
