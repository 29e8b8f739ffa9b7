"""What hosts instances: the directory of instances, the executor of side effects, the writer."""
