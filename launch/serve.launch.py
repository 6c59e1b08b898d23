"""Launch the edgeserving node with a parameters file.

    ros2 launch edgeserving_ros serve.launch.py
    ros2 launch edgeserving_ros serve.launch.py config_file:=/path/serve.yaml policy:=clockwork \
        namespace:=robot1 use_sim_time:=true

Arguments:
  config_file     parameters file (default: share/edgeserving_ros/config/serve.yaml)
  policy          scheduling policy; '' keeps the policy of config_file
  namespace       namespace of the node ('' = root)
  use_sim_time    take the node clock from /clock
  fastdds_profile Fast DDS XML profile exported as FASTDDS_DEFAULT_PROFILES_FILE for the node
                  (default: the package's large-frame profile; '' leaves the variable as it is)

The Fast DDS profile only reaches processes this launch file starts: start the camera driver
with the same FASTDDS_DEFAULT_PROFILES_FILE, or large frames between the processes are lost.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = 'edgeserving_ros'


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument(
            'config_file', default_value=os.path.join(share, 'config', 'serve.yaml'),
            description='Parameters file of the edgeserving node.'),
        DeclareLaunchArgument(
            'policy', default_value='',
            description="Scheduling policy; '' keeps the policy of config_file."),
        DeclareLaunchArgument(
            'namespace', default_value='', description="Namespace of the node; '' = root."),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false',
            description='Use the /clock topic as the node clock (true or false).'),
        DeclareLaunchArgument(
            'fastdds_profile',
            default_value=os.path.join(share, 'config', 'fastdds_large_frames.xml'),
            description="Fast DDS XML profile for the node's process; '' keeps the "
                        'environment as it is.'),
        OpaqueFunction(function=_launch_node),
    ])


def _launch_node(context):
    """Return the node configured from the argument values.

    The Fast DDS profile goes into the node's own environment, so that a launch file including
    this one does not pass it on to processes it starts later.
    """
    environment = {}
    fastdds_profile = LaunchConfiguration('fastdds_profile').perform(context)
    if fastdds_profile:
        environment['FASTDDS_DEFAULT_PROFILES_FILE'] = fastdds_profile

    parameters = [LaunchConfiguration('config_file').perform(context)]
    policy = LaunchConfiguration('policy').perform(context)
    if policy:
        parameters.append({'policy': policy})
    use_sim_time = LaunchConfiguration('use_sim_time').perform(context).lower()
    if use_sim_time not in ('true', 'false'):
        raise ValueError(f"use_sim_time is {use_sim_time!r}; expected 'true' or 'false'")
    parameters.append({'use_sim_time': use_sim_time == 'true'})

    return [Node(
        package=PACKAGE,
        executable='edgeserving',
        name='edgeserving',
        namespace=LaunchConfiguration('namespace').perform(context),
        parameters=parameters,
        additional_env=environment,
        output='screen',
        emulate_tty=True,
    )]
