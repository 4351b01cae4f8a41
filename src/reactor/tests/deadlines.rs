//! Deadlines judge input that arrived, and are filed when they move earlier.

use super::*;

#[test]
fn a_deadline_due_in_the_turn_that_reads_a_line_sees_the_line() {
    let mut setup = Setup::new();
    setup.config.deadline = Some(0);
    setup.config.strict = true;
    let bound = setup.bind();
    let mut talkers: Vec<Client> = (0..16).map(|_| bound.connect()).collect();
    for c in &mut talkers {
        c.send("hi\n");
    }
    let mut silent = bound.connect();
    let server = bound.run();
    // Accepted, read and due in the first turn: the run phase reads the
    // line before the timer phase judges the deadline, so the session
    // never even considers closing (no veto).
    for c in &mut talkers {
        c.expect("hi\ndeadline after 1 lines, 0 vetoed\n");
    }
    // Not vacuous: one that sent nothing is closed by the same deadline.
    assert_eq!(server.closed(), (None, CloseReason::HandshakeTimeout));
    silent.expect_closed();
    let done = server.stop();
    assert_eq!(done.stats.closed(Kind::Device, CloseReason::HandshakeTimeout), 1);
}

#[test]
fn a_deadline_reads_what_arrived_before_it_closes() {
    let mut setup = Setup::new();
    setup.config.deadline = Some(0);
    setup.config.strict = true;
    let bound = setup.bind();
    // A line one byte longer than the read buffer: the first turn's one
    // read takes all but its newline, so when the deadline fires in that
    // turn the line has arrived but has not been read.
    let line = format!("{}\n", "x".repeat(SCRATCH));
    let mut clients: Vec<Client> = (0..4).map(|_| bound.connect()).collect();
    for c in &mut clients {
        c.send(&line);
    }
    let server = bound.run();
    for c in &mut clients {
        c.expect(&line);
        // Closing was considered once, then the last-chance read found
        // the newline.
        c.expect("deadline after 1 lines, 1 vetoed\n");
    }
    let done = server.stop();
    assert_eq!(done.stats.closed(Kind::Device, CloseReason::HandshakeTimeout), 0);
    assert!(done.stats.budget_spent[Budget::Reads as usize] >= 4);
}

#[test]
fn a_deadline_that_a_call_moves_earlier_is_filed_after_the_call() {
    // From none to 20 ms from now: the reactor files it after the call,
    // and it fires once.
    let server = Setup::new().run();
    let mut c = server.connect();
    c.send("deadline 20\n");
    c.expect("deadline after 1 lines, 0 vetoed\n");
    c.send("ping\n");
    c.expect("ping\n");
    server.stop();
}

// (d) Back-pressure.
