//! One write per connection per turn, and the per-turn budgets: the work is done whole, over more turns.

use super::*;

#[test]
fn many_lines_in_one_read_are_answered_in_one_write() {
    let server = Setup::new().run();
    let mut c = server.connect();
    let input = lines(100, 20);
    c.send(&input);
    c.expect(&input);
    c.send("stats\n");
    c.expect("writes 1 reads 2\n");

    // Output for one connection that several others cause in one turn
    // goes out in one write too.
    let mut a = server.named("a");
    let mut b = server.named("b");
    b.send("send a x\nsend a y\nsend a z\n");
    b.expect("sent Ok(())\n".repeat(3));
    a.expect("x\ny\nz\n");
    a.send("stats\n");
    // 2 writes above, then one for each of: named a, named b, b's three
    // answers, a's three lines.
    a.expect("writes 6 reads 6\n");
    server.stop();
}

// (b) Per-turn budgets.

#[test]
fn with_a_read_budget_of_one_input_past_64_kib_is_all_answered() {
    let mut setup = Setup::new();
    setup.budgets.reads = 1;
    let bound = setup.bind();
    let input = lines(10_000, 100);
    // 80 KB are in the kernel before the first turn, so its one read
    // fills the 64 KiB buffer and leaves the rest for the next turn.
    let mut c = bound.connect();
    c.send(&input[..80_000]);
    let server = bound.run();
    let mut writer = c.stream.try_clone().unwrap();
    let rest = input[80_000..].to_vec();
    let writing = thread::spawn(move || writer.write_all(&rest).unwrap());
    c.expect(&input);
    writing.join().unwrap();
    let done = server.stop();
    assert!(done.stats.budget_spent[Budget::Reads as usize] > 0);
    assert_eq!(done.stats.bytes_in, input.len() as u64);
}

#[test]
fn with_an_accept_budget_of_one_every_waiting_connection_is_served() {
    let mut setup = Setup::new();
    setup.budgets.accepts = 1;
    let bound = setup.bind();
    let mut clients: Vec<Client> = (0..20).map(|_| bound.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("hello {i}\n"));
    }
    let server = bound.run();
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect(format!("hello {i}\n"));
    }
    let done = server.stop();
    assert_eq!(done.stats.accepted[Kind::Device as usize], 20);
    // One accept per turn, each followed by "the queue may hold more".
    assert_eq!(done.stats.budget_spent[Budget::Accepts as usize], 20);
    assert!(done.stats.loop_iterations >= 20);
}

#[test]
fn with_a_timer_budget_of_one_every_due_deadline_fires() {
    let mut setup = Setup::new();
    setup.budgets.timers = 1;
    setup.config.deadline = Some(0); // due at once, all in one tick
    let bound = setup.bind();
    let mut clients: Vec<Client> = (0..20).map(|_| bound.connect()).collect();
    let server = bound.run();
    for c in &mut clients {
        c.expect("deadline after 0 lines, 0 vetoed\n");
    }
    let done = server.stop();
    // Twenty due in the first turn; each turn fires one and leaves the
    // rest for the next, until the last.
    assert_eq!(done.stats.budget_spent[Budget::Timers as usize], 19);
}

#[test]
fn a_write_budget_splits_a_large_answer_across_turns() {
    let mut setup = Setup::new();
    setup.budgets.write_bytes = 1000;
    let server = setup.run();
    let mut c = server.connect();
    let line = format!("{}\n", "w".repeat(4999));
    c.send(&line);
    c.expect(&line);
    c.send("stats\n");
    c.expect("writes 5 reads 2\n");
    let done = server.stop();
    assert_eq!(done.stats.budget_spent[Budget::WriteBytes as usize], 4);
}

#[test]
fn the_turns_write_budget_is_shared_by_the_fed_connections_in_turn() {
    let mut setup = Setup::new();
    setup.budgets.write_bytes = 1000;
    setup.budgets.turn_write_bytes = 1500;
    let bound = setup.bind();
    // Fed from the first turn on, all three.
    let mut clients: Vec<Client> = (0..3).map(|_| bound.connect()).collect();
    for c in &mut clients {
        c.send("feed 20000\n");
    }
    let server = bound.run();
    let expected: Vec<u8> = (0..20_000).map(pattern).collect();
    for c in &mut clients {
        c.expect(&expected);
        c.expect("fed\n");
    }
    let done = server.stop();
    assert!(done.stats.budget_spent[Budget::TurnWriteBytes as usize] > 0);
    let budgets = &done.app.produce_budgets;
    assert!(budgets.iter().all(|&b| (1..=1000).contains(&b)), "{budgets:?}");
    assert!(budgets.contains(&500), "the second fed connection of a turn gets what is left: {budgets:?}");
}

// (c) Deadlines judge input that arrived.
