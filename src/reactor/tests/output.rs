//! Output limits: back-pressure by interest, and slow consumers.

use super::*;

#[test]
fn a_paused_connection_is_not_read_until_its_client_reads_then_gets_every_answer() {
    let mut setup = Setup::new();
    setup.config.limit = OutputLimit::PauseAbove(4096);
    setup.send_buffer = Some(4096);
    // Several reads per turn, so that reading on past the limit within a
    // turn would show.
    setup.budgets.reads = 4;
    let server = setup.run();
    let mut c = Client::connect_small(server.addr);
    let input = lines(60_000, 100);
    // Write without reading until the kernel will take no more: the
    // reactor has stopped reading this connection.
    c.stream.set_nonblocking(true).unwrap();
    let mut written = 0;
    loop {
        match c.stream.write(&input[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        assert!(written < input.len(), "the reactor never stopped reading");
    }
    server.over_limit();
    c.stream.set_nonblocking(false).unwrap();
    let mut writer = c.stream.try_clone().unwrap();
    let rest = input[written..].to_vec();
    let writing = thread::spawn(move || writer.write_all(&rest).unwrap());
    c.expect(&input);
    writing.join().unwrap();
    let done = server.stop();
    assert!(done.app.over_limit > 0);
    assert_eq!(done.app.read_while_over_limit, 0, "input was handed over while the output was over its limit");
    assert_eq!(done.stats.closed(Kind::Device, CloseReason::SlowConsumer), 0);
}

#[test]
fn a_client_that_does_not_read_past_close_above_is_closed_as_a_slow_consumer() {
    let mut setup = Setup::new();
    setup.config.limit = OutputLimit::CloseAbove(4096);
    setup.send_buffer = Some(4096);
    let server = setup.run();
    let c = Client::connect_small(server.addr);
    let mut writer = c.stream.try_clone().unwrap();
    // Writes until the reactor drops the connection (then the writes fail).
    let writing = thread::spawn(move || {
        let input = lines(100_000, 100);
        let _ = writer.write_all(&input);
    });
    assert_eq!(server.closed(), (None, CloseReason::SlowConsumer));
    c.stream.shutdown(Shutdown::Both).unwrap();
    writing.join().unwrap();
    let done = server.stop();
    assert_eq!(done.stats.closed(Kind::Device, CloseReason::SlowConsumer), 1);
}

#[test]
fn a_client_that_reads_is_not_a_slow_consumer_even_when_a_turn_says_more_than_the_limit() {
    let mut setup = Setup::new();
    setup.config.limit = OutputLimit::CloseAbove(100);
    setup.budgets.write_bytes = 1000;
    let server = setup.run();
    // One read's answers: 1000 bytes, over the limit, written at once; and
    // 4000 bytes, more than a turn's write, so that what is left after the
    // first write is over the limit too though the kernel took it all.
    for input in [lines(50, 20), lines(200, 20)] {
        let mut c = server.connect();
        c.send(&input);
        c.expect(&input);
        c.send("quit\n");
        assert_eq!(server.closed(), (None, CloseReason::Completed));
        c.expect_closed();
    }
    let done = server.stop();
    assert!(done.app.over_limit >= 2, "each turn said more than the limit of 100");
    assert_eq!(done.stats.closed(Kind::Device, CloseReason::SlowConsumer), 0);
}

// (e) Effects, replies, closes, stale tokens.
