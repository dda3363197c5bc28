"""Inputs and outputs: the standard pickle for plain data, cloudpickle for the rest."""


def test_plain_data_uses_the_standard_pickle_and_everything_round_trips():
    import pickle

    import cloudpickle

    from homeport import _pickle

    plain = ((1, "a", b"b", 2.5, None, True), {"k": [1, 2, (3,)]})
    assert _pickle.dumps(plain) == pickle.dumps(plain, protocol=5)
    fancy = ((lambda x: x + 1,), {})  # a lambda needs cloudpickle
    assert cloudpickle.loads(_pickle.dumps(fancy))[0][0](1) == 2
    big = list(range(1000))  # large containers skip the check and still round-trip
    assert _pickle.loads(_pickle.dumps(big)) == big
