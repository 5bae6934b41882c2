def test_two_people_chat_live(people):
    alice, bob = people("alice", "bob")
    a, b = alice.connect(), bob.connect()
    a.say("hello bob")
    assert "hello bob" in b.wait_for("hello bob")
