mod common;

use common::Gateway;

#[test]
fn identify_and_ping() {
    let gw = Gateway::start(common::config());
    let mut dev = gw.device("ce-96-c2-78-27-fc");
    dev.send(b"PING\n");
    dev.expect(b"PONG\n");
    let (_, stats) = gw.stop();
    assert_eq!(stats.accepted, [1, 0]);
}
