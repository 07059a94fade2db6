"""The parallel layer names the product's dataset without importing jobs/ (the layer
order): its name must stay the schema's."""
from lrmpi.jobs.checkpoint import schema
from lrmpi.parallel import resolutions


def test_the_products_dataset_is_the_schemas():
    assert resolutions.RESULT == schema.RESULT
